"""`mesh ask`, `mesh ingest` and `mesh mcp` (the `mesh` command hands these to `python -m meshtrader.assistant`)."""
from __future__ import annotations

import argparse
import json
import sys

from meshtrader.assistant.answer import Assistant, QuestionError
from meshtrader.assistant.knowledge import index_path, ingest, stale_pages, write_pages
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.config import REPO_ROOT, ConfigError, Settings, load_settings
from meshtrader.runtime.topology import MCP_HTTP_OFFSET


def cmd_ask(settings: Settings, args: argparse.Namespace) -> int:
    hot = HotState(settings.effective_redis_url, settings.redis_prefix)
    try:
        answer = Assistant(settings, risk_state=lambda: hot.get("risk") or {}).ask(" ".join(args.question))
    except QuestionError as error:
        print(error, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer.as_dict(), indent=2))
        return 0
    print(answer.text)
    if answer.model:
        print("\nSources:")
        for n, fact in enumerate(answer.facts, 1):
            print(f"  [{n}] {fact.source}")
    if answer.refused:
        print(f"\n({answer.refused})", file=sys.stderr)
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    if args.check:
        stale = stale_pages()
        for path in stale:
            print(f"{path.relative_to(REPO_ROOT)} differs from what the code generates (mesh ingest --pages)")
        return 1 if stale else 0
    if args.pages:
        for path in write_pages():
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    report = ingest(settings)
    print(f"{index_path(settings)}: {len(report.added)} added, {len(report.updated)} updated, "
          f"{len(report.removed)} removed, {report.unchanged} unchanged")
    for path in report.added + report.updated:
        print(f"  indexed {path}")
    return 0


def cmd_mcp(settings: Settings, args: argparse.Namespace) -> int:
    from meshtrader.assistant.mcp_server import serve  # the MCP SDK loads only for this command

    port = args.port or settings.port_base + MCP_HTTP_OFFSET
    if args.http:
        print(f"MCP over streamable HTTP at http://{args.host}:{port}/mcp", file=sys.stderr)
    try:
        serve(settings, "http" if args.http else "stdio", args.host, port)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh", description="the assistant: questions, its index, its MCP server")
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer a question from the records and the docs, each fact cited")
    ask.add_argument("question", nargs="+")
    ask.add_argument("--json", action="store_true", help="the answer, its facts and sources as one JSON object")
    ask.set_defaults(func=cmd_ask)
    ingest_ = sub.add_parser("ingest", help="index the docs (README.md, knowledge/) for mesh ask; only what changed")
    ingest_.add_argument("--pages", action="store_true", help="first regenerate the pages generated from the code "
                                                              "(knowledge/config, knowledge/strategies)")
    ingest_.add_argument("--check", action="store_true", help="only check the generated pages are current (exit 1 "
                                                              "if not)")
    ingest_.set_defaults(func=cmd_ingest)
    mcp = sub.add_parser("mcp", help="run the MCP server: stdio, or --http on loopback")
    mcp.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (--http)")
    mcp.add_argument("--port", type=int, help=f"port (--http; default MESH_PORT_BASE+{MCP_HTTP_OFFSET})")
    mcp.set_defaults(func=cmd_mcp)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(recorded=True)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    return args.func(settings, args)


if __name__ == "__main__":
    sys.exit(main())
