"""The ``wfm-sim`` command. Subcommands map flags onto the library's functions; no logic lives here."""

from __future__ import annotations

import argparse
import json
import sys


def _collect(args) -> None:
    from wfm_sim.datasets.recorder import record

    stats = record(args.source, args.out, args.episodes, policy=args.policy, size=args.size,
                   max_steps=args.max_steps, seed=args.seed, progress=not args.quiet)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}))


def _dataset_info(args) -> None:
    from wfm_sim.datasets.inspect import dataset_sheet
    from wfm_sim.datasets.store import EpisodeReader

    reader = EpisodeReader(args.path)
    print(json.dumps(reader.summary(), indent=2))
    if args.sheet:
        print(f"contact sheet: {dataset_sheet(reader, args.sheet, episodes=args.sheet_episodes)}")


def build_parser() -> argparse.ArgumentParser:
    from wfm_sim.datasets.sources import SOURCES

    p = argparse.ArgumentParser(prog="wfm-sim", description="World-foundation-model simulator tools")
    sub = p.add_subparsers(dest="command", required=True)

    lines = "\n".join(f"  {n:16s} {s.description} (policies: {', '.join(s.policies)})" for n, s in SOURCES.items())
    c = sub.add_parser("collect", help="record episodes from a real simulator into a zarr store",
                       description=f"Record episodes from a real simulator.\n\nsources:\n{lines}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("source", choices=sorted(SOURCES), metavar="SOURCE", help="simulator to record (listed above)")
    c.add_argument("--episodes", type=int, required=True, help="episodes to record (appended if --out exists)")
    c.add_argument("--out", required=True, help="output store, e.g. data/driving.zarr")
    c.add_argument("--policy", default=None, help="policy name (default: the source's scripted one)")
    c.add_argument("--size", type=int, default=64, help="frame side in pixels (default 64)")
    c.add_argument("--max-steps", type=int, default=None, help="steps per episode (default: per source)")
    c.add_argument("--seed", type=int, default=0, help="first episode seed")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_collect)

    d = sub.add_parser("dataset", help="inspect episode stores")
    dsub = d.add_subparsers(dest="dataset_command", required=True)
    info = dsub.add_parser("info", help="print a summary of a store; optionally write a PNG contact sheet")
    info.add_argument("path")
    info.add_argument("--sheet", default=None, help="write a contact sheet PNG here")
    info.add_argument("--sheet-episodes", type=int, default=3, help="episodes shown on the sheet")
    info.set_defaults(func=_dataset_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"wfm-sim {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
