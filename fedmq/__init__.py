"""The `fedmq` command and the operator tools around the two roles: the click group (cli), the
launcher behind `fedmq run`, `watch`, `status` and its management API client, the `keys` and `tls`
commands, the README settings-table generator, and the settings only these tools use.

The roles (coordinator/, worker/) never import this package; it imports them, lazily, when a
command starts one."""
