"""The command reference, made from the Typer app (`qbctl.cli.app`), so that it cannot drift from the code.

It writes the generated part of each page in docs/commands/ (a page per command: its usage, what it does,
its arguments and options, as `--help` has them), of the index docs/commands/README.md (the global options
and every command) and of the README's list of commands. Each generated part sits between two markers; the
rest of a page is written by hand (what a command does in detail, examples), as docker/cli's reference is.

`python -m qbctl.reference` rewrites them (and starts the page of a new command); `--check` exits 1 when one
is stale or missing, or a page is left of a command that is gone (tests/unit/test_reference.py checks the
same). Change a command's help in qbctl/commands/, never the generated text.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

START = "<!-- reference:start (made by python -m qbctl.reference from the commands' help: edit that) -->"
END = "<!-- reference:end -->"
WIDTH = 110  # the docs' line length
FOLDER = Path("docs") / "commands"
INDEX = FOLDER / "README.md"


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("db", "migrate")
    usage: str  # qbctl db migrate [OPTIONS]
    help: str
    arguments: list[tuple[str, str]] = field(default_factory=list)  # (name, what)
    options: list[tuple[str, str]] = field(default_factory=list)  # (flags, what)
    also: str = ""  # another spelling of the same command (`qbctl snapshot take [NAME]`)

    @property
    def name(self) -> str:
        return " ".join(("qbctl", *self.path))

    @property
    def page(self) -> str:
        return "-".join(self.path) + ".md"

    @property
    def summary(self) -> str:
        return self.help.split("\n\n", 1)[0].replace("\n", " ")


def _group():
    import typer.main

    from qbctl.cli import app

    return typer.main.get_command(app)  # with the completion options, as `qbctl --help` has them


def _context(cmd, name: str, parent=None):
    return cmd.context_class(cmd, info_name=name, parent=parent)


def _params(cmd, ctx) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
    """(arguments, options, usage pieces) of a click command, as its --help shows them, --help left out."""
    arguments, options, pieces = [], [], []
    for param in cmd.get_params(ctx):
        if param.param_type_name == "argument":
            shown = param.metavar or param.name.upper()
            if param.nargs == -1 and not param.metavar:
                shown += "..."
            if not param.required and not param.metavar:
                shown = f"[{shown}]"
            pieces.append(shown)
            record = param.get_help_record(ctx)
            what = record[1] if record else ""
            name = (param.metavar or param.name.upper()).removeprefix("[").removesuffix("]")
            arguments.append((name, what.replace("[required]", "")))
        elif "--help" not in param.opts:
            record = param.get_help_record(ctx)
            if record:
                options.append(record)
    if options or cmd.get_params(ctx):
        pieces.insert(0, "[OPTIONS]")
    return arguments, options, " ".join(pieces)


def commands() -> list[Command]:
    """Every command a user can run, in the order `qbctl --help` lists them; a group's default command (a
    group that runs one of its commands when given none: `qbctl snapshot [NAME]`) under the group's name."""
    root = _group()
    root_ctx = _context(root, "qbctl")
    found: list[Command] = []

    def walk(cmd, ctx, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            arguments, options, pieces = _params(cmd, ctx)
            found.append(Command(path, " ".join(("qbctl", *path, pieces)).strip(), cmd.help or "", arguments, options))
            return
        default = getattr(cmd, "default_command", None)
        for name, sub in subs.items():
            sub_ctx = _context(sub, name, ctx)
            if name == default:
                arguments, options, pieces = _params(sub, sub_ctx)
                found.append(
                    Command(
                        path,
                        " ".join(("qbctl", *path, pieces)),
                        sub.help or "",
                        arguments,
                        options,
                        also=" ".join(("qbctl", *path, name, pieces)),
                    )
                )
            elif not sub.hidden:
                walk(sub, sub_ctx, (*path, name))

    for name, cmd in root.commands.items():
        walk(cmd, _context(cmd, name, root_ctx), (name,))
    return found


def global_options() -> list[tuple[str, str]]:
    root = _group()
    return _params(root, _context(root, "qbctl"))[1]


def groups() -> dict[str, str]:
    """Each command group's name and what it holds (`db`: Schema, TimescaleDB policies and sample data.)."""
    return {
        name: (cmd.help or "").split("\n\n", 1)[0]
        for name, cmd in _group().commands.items()
        if getattr(cmd, "commands", None) is not None
    }


# --- the text --------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Help text as Markdown: an angle bracket before a letter would be read as an HTML tag."""
    return re.sub(r"<(?=[A-Za-z/])", "&lt;", text)


def _item(head: str, text: str) -> list[str]:
    """One list item, wrapped at WIDTH between words (a code span may break: Markdown reads it as a space)."""
    text = " ".join(text.split())
    body = f"- {head}: {_md(text)}" if text else f"- {head}"
    return textwrap.wrap(body, WIDTH, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def _para(text: str) -> list[str]:
    out: list[str] = []
    for para in text.strip().split("\n\n"):
        out += textwrap.wrap(_md(" ".join(para.split())), WIDTH, break_long_words=False, break_on_hyphens=False)
        out.append("")
    return out[:-1]


def page_block(cmd: Command) -> str:
    lines = [f"# `{cmd.name}`", "", *_para(cmd.help), "", "```", cmd.usage, "```"]
    if cmd.also:
        lines += ["", f"Also spelt `{cmd.also}`."]
    if cmd.arguments:
        lines += ["", "Arguments:", ""]
        for name, what in cmd.arguments:
            lines += _item(f"`{name}`", what)
    if cmd.options:
        lines += ["", "Options:", ""]
        for flags, what in cmd.options:
            lines += _item(f"`{flags}`", what)
    lines += ["", "Global options, output and exit codes: [the command index](README.md)."]
    return "\n".join(lines)


def index_block(cmds: list[Command]) -> str:
    lines = ["```", "qbctl [GLOBAL OPTIONS] COMMAND [ARGS]...", "```", "", "Global options (before the command):", ""]
    for flags, what in global_options():
        lines += _item(f"`{flags}`", what)
    return "\n".join([*lines, "", *_list(cmds, "")])


def readme_block(cmds: list[Command]) -> str:
    return "\n".join(_list(cmds, FOLDER.as_posix() + "/"))


def _list(cmds: list[Command], prefix: str) -> list[str]:
    """Every command with what it does, by group: the top-level commands first, then each group's."""
    lines: list[str] = []
    heads = groups()
    for group in [None, *heads]:
        members = [c for c in cmds if (c.path[0] if c.path[0] in heads else None) == group]
        if group is not None:
            lines += ["", f"`qbctl {group}`: {_md(heads[group])}", ""]
        for c in members:
            lines += _item(f"[`{c.name}`]({prefix}{c.page})", c.summary)
    return lines


def with_block(text: str, block: str) -> str:
    """The text with its generated part replaced (the text ends with it when it has none yet)."""
    if START not in text:
        return f"{text.rstrip()}\n\n{START}\n{block}\n{END}\n" if text.strip() else f"{START}\n{block}\n{END}\n"
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{block}\n{END}{after}"


def targets(root: Path) -> tuple[dict[Path, str], list[Path]]:
    """(each generated file's path -> its text as it should be, the pages of commands that are gone)."""
    cmds = commands()
    folder = root / FOLDER

    def current(path: Path) -> str:
        return path.read_text() if path.exists() else ""

    wanted = {folder / c.page: with_block(current(folder / c.page), page_block(c)) for c in cmds}
    wanted[root / INDEX] = with_block(current(root / INDEX), index_block(cmds))
    wanted[root / "README.md"] = with_block(current(root / "README.md"), readme_block(cmds))
    gone = [p for p in sorted(folder.glob("*.md")) if p not in wanted]
    return wanted, gone


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    if not (root / FOLDER).is_dir():  # an installed qbctl: its docs are in the repository, not in the wheel
        sys.stderr.write(f"error: no {FOLDER} beside {Path(__file__).parent}: run this in a checkout of qbctl\n")
        return 2
    wanted, gone = targets(root)
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            sys.stderr.write(f"{p.relative_to(root)} is stale or missing: run python -m qbctl.reference\n")
        for p in gone:
            sys.stderr.write(f"{p.relative_to(root)} documents no command: remove it (git rm)\n")
        return 1 if stale or gone else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(wanted[p])
    for p in gone:
        sys.stderr.write(f"{p.relative_to(root)} documents no command: remove it (git rm)\n")
    return 1 if gone else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
