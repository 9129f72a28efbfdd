#!/usr/bin/env bash
# The main job in one command: build Ember, fetch all-MiniLM-L6-v2 if it is not cached, and
# print the cosine-similarity matrix of a few sentences (or of the texts given as arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin ember
model=$(scripts/fetch-model.sh)
if [ "$#" -ge 2 ]; then
  texts=("$@")
else
  texts=(
    "A man is playing a guitar."
    "Someone is strumming a guitar on stage."
    "The new movie is awesome."
    "The film was fantastic, I loved it."
    "A cheetah is running behind its prey."
  )
fi
target/release/ember similarity --model "$model" "${texts[@]}"
