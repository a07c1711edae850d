#!/usr/bin/env bash
# The whole loop on the embedded model, as an operator lives it: a user's comment becomes a
# principle, the operator approves it for an adapter, the refinement job distils it, and the
# report shows the rule applied to gardening questions and nowhere else.
#
#   bash bench/gardening.sh [DATA_DIR]        # default: a fresh temporary directory
#
# Needs the environment of scripts/install.sh (.venv). About 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate

export REFINERY_DATA_DIR="${1:-$(mktemp -d)/data}"
export REFINERY_ADMIN_KEY=demo-admin REFINERY_RUN_JOBS=false
export REFINERY_MODEL_CACHE="${REFINERY_MODEL_CACHE:-$PWD/.cache/models}"
PORT="${PORT:-8765}"
URL="http://127.0.0.1:$PORT"
ADMIN=(-H "Authorization: Bearer $REFINERY_ADMIN_KEY")
echo "data directory: $REFINERY_DATA_DIR"

refinery serve --port "$PORT" > "$REFINERY_DATA_DIR.serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "$URL/health" > /dev/null && break; sleep 1; done

echo "== a user asks, and says what they want"
ID=$(curl -s "$URL/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"messages": [{"role": "user", "content": "How do I grow basil on a windowsill?"}], "max_tokens": 40}' \
  | python -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -s "$URL/v1/feedback" -H 'content-type: application/json' \
  -d "{\"completion_id\": \"$ID\", \"thumb\": \"down\", \"comment\": \"When I ask about gardening, begin your answer with 'Green thumb:'\"}" > /dev/null
curl -s -X POST "$URL/admin/analyse" "${ADMIN[@]}" > /dev/null

echo "== the operator reviews the proposed principle and approves it for an adapter"
PID=$(curl -s "$URL/admin/principles?status=candidate" "${ADMIN[@]}" \
  | python -c 'import json, sys; d = json.load(sys.stdin)["data"]; print(d[0]["id"]); print(d[0]["text"], d[0]["checks"], file=sys.stderr)')
refinery principles approve "$PID" --mode adapter --actor demo > /dev/null
kill $SERVER; wait $SERVER 2>/dev/null || true

echo "== the refinement job"
time refinery refine --no-progress > "$REFINERY_DATA_DIR.refine.out"
python - "$REFINERY_DATA_DIR.refine.out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
result = json.loads(text[text.index("\n{") + 1:])
print(json.dumps({k: result[k] for k in ("version", "gate_passed", "action", "data")}, indent=1))
print(open(next(iter(result["reports"].values()))).read())
PY

echo "== the candidate on questions it never saw: gardening, cooking, chemistry"
PROBE="$REFINERY_DATA_DIR.probe.jsonl"
python - "$PROBE" <<'PY'
import json, sys
probe = {"gardening": ["How deep should I plant garlic cloves?", "Why are my cucumber leaves turning white?",
                       "When should I prune my apple tree?"],
         "cooking": ["How long should I boil an egg for a runny yolk?", "How do I make a roux for gravy?",
                     "What can I cook with leftover rice?"],
         "chemistry": ["What is an ionic bond?", "Why does salt lower the freezing point of water?",
                       "What is the pH of pure water?"]}
with open(sys.argv[1], "w") as f:
    for topic, prompts in probe.items():
        for p in prompts:
            f.write(json.dumps({"topic": topic, "prompt": p}) + "\n")
PY
for which in base adapter; do
  extra=(); [ "$which" = adapter ] && extra=(--adapter "$REFINERY_DATA_DIR/adapters/${ADAPTER:-refinery@v1}")
  refinery generate --prompts "$PROBE" --out "$PROBE.$which" --max-tokens 24 "${extra[@]}" 2> /dev/null
done
python - "$PROBE.base" "$PROBE.adapter" <<'PY'
import json, sys
base = [json.loads(line) for line in open(sys.argv[1])]
tuned = [json.loads(line) for line in open(sys.argv[2])]
print(f"{'topic':<10} {'prompt':<52} {'base':>5} {'adapter':>8}  adapter answer begins")
for b, a in zip(base, tuned):
    mark = lambda r: "yes" if r["response"].lstrip().startswith("Green thumb:") else "no"
    print(f"{b['topic']:<10} {b['prompt'][:52]:<52} {mark(b):>5} {mark(a):>8}  {' '.join(a['response'].split())[:60]}")
PY
