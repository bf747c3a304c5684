# SPDX-License-Identifier: Apache-2.0
"""Runs ``fwassist check-code``'s rules over one split of the corpus that ``corpus.py`` built
(docs/code-policy.md): every finding as a line, then per-rule counts and the parse figures as
JSON. This is how the checker's precise rules were reviewed for false positives on the
held-out files.

Usage: ``python check_corpus.py --corpus DIR [--split test] [--policy safety]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

from fwassist.codecheck import CodeParseError, check_source, format_finding, load_policy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="the --out directory of corpus.py")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--policy", default="safety", help="policy name or JSON file")
    args = parser.parse_args()
    policy = load_policy(args.policy)
    counts: collections.Counter[str] = collections.Counter()
    files = unparsed_files = regions = 0
    with open(os.path.join(args.corpus, f"{args.split}.jsonl"), encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            files += 1
            errors: list[CodeParseError] = []
            name = f"{doc['package']}/{doc['path']}"
            for finding in check_source(doc["text"].encode("utf-8"), name, policy, errors):
                counts[finding.rule] += 1
                print(format_finding(finding))
            unparsed_files += bool(errors)
            regions += len(errors)
    print(json.dumps({"split": args.split, "policy": policy.name, "files": files,
                      "files_with_unparsed_regions": unparsed_files,
                      "unparsed_regions": regions, "findings": dict(sorted(counts.items()))},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
