"""The `spyglass` command.

Subcommands are imported only when they run: `observe` should not pay for
FastAPI, bcc or pyroute2, and a node-side command with a missing dependency
must not break the client commands.
"""

from __future__ import annotations

import importlib

import click

#: name -> "module:attribute" of the click command.
COMMANDS: dict[str, str] = {
    "observe": "spyglass.cli.observe:observe_cmd",
    "status": "spyglass.cli.status:status_cmd",
    "query": "spyglass.cli.query:query_group",
    "export": "spyglass.cli.interop:export_cmd",
    "import": "spyglass.cli.interop:import_cmd",
    "store": "spyglass.cli.store_cmds:store_group",
    "up": "spyglass.cli.agent_cmds:up_cmd",
    "agent": "spyglass.cli.agent_cmds:agent_cmd",
    "down": "spyglass.cli.agent_cmds:down_cmd",
    "doctor": "spyglass.cli.agent_cmds:doctor_cmd",
    "lab": "spyglass.cli.lab_cmds:lab_group",
    "policy": "spyglass.cli.policy_cmds:policy_group",
    "explain": "spyglass.cli.policy_cmds:explain_cmd",
    "service": "spyglass.cli.service_cmds:service_group",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, attr = self.lazy[cmd_name].split(":")
        try:
            cmd = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:  # noqa: BLE001 - any import failure
            # Keep `spyglass --help` and the other commands working; say why on use.
            return _unavailable(cmd_name, f"{type(exc).__name__}: {exc}")
        if not isinstance(cmd, click.Command):
            return _unavailable(cmd_name, f"{self.lazy[cmd_name]} is not a click command")
        self.add_command(cmd, cmd_name)
        return cmd


def _unavailable(name: str, why: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(
            f"`spyglass {name}` is not available in this install ({why}); reinstall with "
            "`pip install -e .` from the Spyglass checkout")

    return click.Command(name, callback=fail, short_help=f"(unavailable: {why})"[:80],
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spyglass", prog_name="spyglass")
def main() -> None:
    """Spyglass: flow observability for Linux, in the spirit of Cilium's Hubble.

    Run `spyglass up` on the node, then `spyglass observe -f` to watch flows.
    """


if __name__ == "__main__":
    main()
