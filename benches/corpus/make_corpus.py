#!/usr/bin/env python3
"""Build benches/corpus/wordnet-examples.txt: real English sentences for Ember's benchmarks.

Source: the usage examples quoted in the glosses of WordNet 3.0 (Debian package
`wordnet-base`), licensed under the permissive WordNet 3.0 licence (see LICENSE-WordNet in
this folder). Every distinct example of at least 14 words is kept, in a fixed pseudo-random
order (seed 20261127), one per line: 1,244 sentences, about 17 words / 22 BERT tokens each.

    apt-get download wordnet-base && dpkg -x wordnet-base_*.deb wn
    python3 benches/corpus/make_corpus.py wn/usr/share/wordnet > benches/corpus/wordnet-examples.txt
"""
import glob
import random
import re
import sys

MIN_WORDS = 14


def main(wordnet_dir: str) -> None:
    examples = set()
    for path in sorted(glob.glob(f"{wordnet_dir}/data.*")):
        with open(path, encoding="latin-1") as f:
            for line in f:
                # Lines starting with two spaces are the licence header; glosses follow '|'.
                if line.startswith("  ") or "|" not in line:
                    continue
                for example in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                    example = " ".join(example.split())
                    if len(example.split()) >= MIN_WORDS:
                        examples.add(example)
    ordered = sorted(examples)
    random.Random(20261127).shuffle(ordered)
    sys.stdout.write("".join(f"{e}\n" for e in ordered))


if __name__ == "__main__":
    main(sys.argv[1])
