"""`fedmq keys ...`: make identities, and register or revoke workers at the coordinator."""

from __future__ import annotations

from pathlib import Path

import click

from common import identity
from common.errors import ConfigError

REGISTRY_HELP = "The coordinator's worker registry (JSON), as given to --registry."


@click.group()
def keys() -> None:
    """Identities for sealed runs: every worker and the coordinator have one.

    \b
    1. fedmq keys generate coordinator --dir keys     (on the coordinator's machine)
    2. fedmq keys generate hospital-a --dir keys      (on each worker's machine)
    3. copy hospital-a.pub to the coordinator, compare its fingerprint out of band, then
       fedmq keys register keys/hospital-a.pub --registry keys/registry.json
    4. copy coordinator.pub to every worker (--coordinator-key)
    """


@keys.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("keys"),
              show_default=True, help="Where NAME.key (private) and NAME.pub are written.")
def generate(name: str, directory: Path) -> None:
    """Create the identity NAME: an Ed25519 signing key and an X25519 encryption key."""
    try:
        private, public = identity.save_identity(identity.Identity.generate(name), directory)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"private key {private} (keep it secret, mode 0600)\npublic key  {public}\n"
               f"fingerprint {identity.load_public(public).fingerprint}")


@keys.command()
@click.argument("public_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--registry", type=click.Path(path_type=Path), required=True, help=REGISTRY_HELP)
@click.option("--replace", is_flag=True, help="Replace an existing key of the same name.")
def register(public_file: Path, registry: Path, replace: bool) -> None:
    """Admit the worker whose public identity is PUBLIC_FILE (a running coordinator picks it
    up within seconds)."""
    try:
        worker = identity.load_public(public_file)
        entries = identity.Registry.load(registry)
        entries.add(worker, replace_existing=replace)
        entries.save(registry)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"registered {worker.name} ({worker.fingerprint}) in {registry}")


@keys.command()
@click.argument("name")
@click.option("--registry", type=click.Path(path_type=Path), required=True, help=REGISTRY_HELP)
def revoke(name: str, registry: Path) -> None:
    """Remove worker NAME: its updates are rejected from then on."""
    try:
        entries = identity.Registry.load(registry)
        entries.remove(name)
        entries.save(registry)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {name} in {registry}")


@keys.command(name="list")
@click.option("--registry", type=click.Path(path_type=Path), required=True, help=REGISTRY_HELP)
def list_(registry: Path) -> None:
    """Registered workers and their key fingerprints."""
    try:
        entries = identity.Registry.load(registry)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for name in sorted(entries.workers):
        click.echo(f"{name}\t{entries.workers[name].fingerprint}")


@keys.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def show(file: Path) -> None:
    """Name and fingerprint of a public (.pub) or private (.key) identity file."""
    try:
        public = (identity.load_public(file) if file.suffix == ".pub"
                  else identity.load_identity(file).public())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{public.name}\t{public.fingerprint}")
