"""qbctl config show."""
from __future__ import annotations

import typer

from qbctl.commands import JSON_OPTION, state

config_app = typer.Typer(help="Resolved settings.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Every setting's value (secrets masked) and where it came from."""
    from qbctl.config.settings import SETTINGS

    st = state(ctx, json)
    settings = st.settings
    rows = [{"key": s.key, "value": settings.masked(s.key), "source": settings.sources[s.key]} for s in SETTINGS]
    if st.out.json:
        st.out.emit_json({"ok": True, "project": settings.project, "root": str(settings.root),
                          "env_file": str(settings.env_file) if settings.env_file else None, "settings": rows})
        return
    from qbctl.render import _table

    t = _table("setting", "value", "source")
    for r in rows:
        t.add_row(r["key"], r["value"], r["source"])
    st.out.print(t)
    st.out.line(f"project {settings.project}, env file {settings.env_file or '(none)'}, root {settings.root}")
