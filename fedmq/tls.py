"""`fedmq tls generate`: a certificate authority and the certificates for TLS to the broker."""

from __future__ import annotations

from pathlib import Path

import click

from fedmq import tls_certs


@click.group()
def tls() -> None:
    """Certificates for TLS to the broker (amqps on port 5671, client certificates required).

    \b
    fedmq tls generate deploy/tls --readable-keys
    docker compose -f docker-compose.yml -f docker-compose.tls.yml up --build
    """


@tls.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, default=tls_certs.COMPOSE_HOSTS,
              show_default=True, help="A DNS name or IP address clients use to reach the broker "
              "(repeat; the broker certificate names them all).")
@click.option("--client", "clients", multiple=True, default=tls_certs.COMPOSE_CLIENTS,
              show_default=True, help="A client certificate to issue (repeat): one per service "
              "or site.")
@click.option("--days", default=365, show_default=True, help="Validity of every certificate.")
@click.option("--readable-keys", is_flag=True,
              help="Write private keys with mode 0644 instead of 0600, so that containers "
                   "running as other users (rabbitmq, fedmq) can read them through bind mounts. "
                   "For a demo on one machine only.")
def generate(directory: Path, hosts: tuple[str, ...], clients: tuple[str, ...], days: int,
             readable_keys: bool) -> None:
    """Write ca.pem, broker.crt/.key and CLIENT.crt/.key into DIRECTORY (replacing them).

    The CA's private key is not kept: to add a site later, generate a new set (or use your
    organisation's CA).
    """
    try:
        pairs = tls_certs.generate_deployment(directory, hosts, clients, days,
                                              0o644 if readable_keys else 0o600)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"CA          {directory / 'ca.pem'}")
    for name, pair in pairs.items():
        click.echo(f"{name:<11} {pair.cert} {pair.key}")
    click.echo(f"the broker certificate names: {', '.join(hosts)}")
    if readable_keys:
        click.echo("private keys are readable by every local user (--readable-keys): demo only")
