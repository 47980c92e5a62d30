"""`adaptive-decoder merge OUT PART [PART ...]`: merge the shard directories of one sharded collection
(`collect --shard INDEX/COUNT`) into one collection directory that LPO training reads (adaptive_decoder.lpo.shards)."""

from __future__ import annotations

import argparse


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="adaptive-decoder merge", description=__doc__)
    ap.add_argument("out", help="the merged collection directory to write (new or empty)")
    ap.add_argument("parts", nargs="+", help="the shard directories, one per INDEX of INDEX/COUNT")
    ap.add_argument("--copy", action="store_true", help="copy the shard files instead of hard-linking them")
    args = ap.parse_args(argv)
    from ..lpo.shards import merge_collections

    try:
        out = merge_collections(args.out, args.parts, copy=args.copy)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        ap.exit(2, f"adaptive-decoder merge: error: {e}\n")
    print(out)
