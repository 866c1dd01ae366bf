#!/bin/bash
# Tests of the runtime without the compiler: builds it with a hand-written stand-in for the
# generated object (tests/fake_model.c) and with tests/internals.c, then drives the command
# line. Usage: Runtime/tests/run.sh [--sanitize]   (data sets from $MDL_DATA, default data/)
set -u
cd "$(dirname "$0")/.." || exit 1
RUNTIME=$(pwd)
DATA=${MDL_DATA:-$RUNTIME/../data}
CC=${CC:-cc}
CFLAGS="-std=c11 -O2 -g -Wall -Wextra -Werror"
if [ "${1:-}" = "--sanitize" ]; then
    CFLAGS="$CFLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined"
    export ASAN_OPTIONS=detect_leaks=0 # process-lifetime data are never freed, by design
fi
WORK=$(mktemp -d /tmp/mdl-runtime-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
LIBS="-lopenblas -lpthread -lm"

passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; [ -f "$WORK/out" ] && sed 's/^/    /' "$WORK/out" | head -20; }

# run RC CMD...: runs CMD (stdout and stderr to $WORK/out), checks its exit status.
run() {
    local want=$1
    shift
    "$@" >"$WORK/out" 2>&1
    local rc=$?
    if [ "$rc" = "$want" ]; then ok; else fail "exit $rc (wanted $want): $*"; fi
}
# has TEXT: the last command's output contains TEXT.
has() { if grep -qF -- "$1" "$WORK/out"; then ok; else fail "output lacks '$1'"; fi; }
same() { if cmp -s "$1" "$2"; then ok; else fail "$1 and $2 differ"; fi; }

echo "building in $WORK"
$CC $CFLAGS -Iinclude -I. ./*.c tests/fake_model.c -o "$WORK/model" $LIBS || exit 1
$CC $CFLAGS -Iinclude -I. ./*.c tests/internals.c -o "$WORK/internals" $LIBS || exit 1
cd "$WORK" || exit 1
M=./model

# -- help and usage ----------------------------------------------------------------------
run 0 $M --help; has "train"; has "eval"; has "grad"; has "predict"; has "inputs: x f32[n,2]"
run 0 $M train --help; has "--resume FILE"; has "--check-numerics"; has "--threads N"
run 0 $M predict --help; has "--in NAME=FILE"
run 2 $M
run 2 $M frobnicate; has "unknown command 'frobnicate'"
run 2 $M train --lr -1; has "--lr: '-1' is not a positive number"
run 1 $M train --lr 0.1; has "--lr: the optimizer 'optim' has no learning-rate scale"
run 2 $M train --epochs x; has "--epochs: expected a positive integer, got 'x'"
run 2 $M train --bogus; has "unknown flag '--bogus'"
run 2 $M train --epochs 2 --steps 3; has "exclude each other"
run 2 $M train --seed; has "--seed needs a value"

# -- training on generator data, log, loss curve -----------------------------------------
run 0 $M train --save full.safetensors --log full.jsonl
has "eval test: loss"; has "metrics: w0"; has "total_steps 24.0000"
for e in '"event":"start"' '"event":"step","step":10,"epoch":2' '"event":"eval","step":8,"split":"test"' '"event":"final","step":24'; do
    if grep -qF "$e" full.jsonl; then ok; else fail "full.jsonl lacks $e"; fi
done
if [ "$(od -An -tx1 -N8 full.png | tr -d ' ')" = "89504e470d0a1a0a" ]; then ok; else fail "full.png is not a PNG"; fi
if [ "$(head -c 8 full.safetensors | od -An -tu8 | tr -d ' ')" -lt 2000 ]; then ok; else fail "checkpoint header length"; fi

# -- resume: interrupted runs continue bit for bit ---------------------------------------
run 130 env MDL_TEST_INTERRUPT_AT=13 $M train --save part.safetensors --log part.jsonl
has "interrupted at step 13; saved 'part.safetensors'"
run 0 $M train --resume part.safetensors --save part.safetensors --log part.jsonl
same full.safetensors part.safetensors
if grep -qF '"event":"interrupted","step":13' part.jsonl && grep -qF '"resume_step":13' part.jsonl; then ok; else fail "part.jsonl"; fi
run 0 $M train --threads 1 --save t1.safetensors --log t1.jsonl
run 0 $M train --threads 3 --save t3.safetensors --log t3.jsonl
same t1.safetensors t3.safetensors
run 1 $M train --resume part.safetensors --batch 16; has "differs from the batch 32"
run 1 $M train --resume part.safetensors --seed 8; has "differs from the seed 7"

export MDL_TEST_RECIPE="recipe batch=32 epochs=2 folds=4 seed=1"
run 0 $M train --save folds.safetensors --log folds.jsonl --quiet
has "fold 4/4  eval test: loss"; has "mean over 4 folds:  test.loss"
run 130 env MDL_TEST_INTERRUPT_AT=30 $M train --save folds2.safetensors --log folds2.jsonl --quiet
run 0 $M train --resume folds2.safetensors --save folds2.safetensors --log folds2.jsonl --quiet
has "fold 3/4  eval test: loss"; has "mean over 4 folds:  test.loss 1.1886 (std 0.1106)"
same folds.safetensors folds2.safetensors
run 0 $M eval --load folds.safetensors; has "fold 4/4  eval test: loss"
export MDL_TEST_RECIPE="recipe batch=32 epochs=2 rounds=3 seed=2"
run 0 $M train --save rounds.safetensors --log rounds.jsonl --quiet; has "total_steps 48.0000"
for at in 16 20; do
    run 130 env MDL_TEST_INTERRUPT_AT=$at $M train --save rounds2.safetensors --log rounds2.jsonl --quiet
    run 0 $M train --resume rounds2.safetensors --save rounds2.safetensors --log rounds2.jsonl --quiet
    same rounds.safetensors rounds2.safetensors
done
unset MDL_TEST_RECIPE

# -- refused checkpoints -----------------------------------------------------------------
# st FILE HEADER DATA_BYTES: a safetensors file with zeroed data (headers here are < 256 bytes).
st() {
    printf "\\$(printf %03o ${#2})\\000\\000\\000\\000\\000\\000\\000%s" "$2" >"$1"
    head -c "$3" /dev/zero >>"$1"
}
head -c 100 full.safetensors >trunc1.safetensors
run 1 $M train --resume trunc1.safetensors; has "'trunc1.safetensors': truncated: the header length says"
head -c $(($(wc -c <full.safetensors) - 4)) full.safetensors >trunc2.safetensors
run 1 $M train --resume trunc2.safetensors; has "'trunc2.safetensors': truncated: header says 20 bytes of data, file has 16"
run 1 env MDL_TEST_HASH=fedcba9876543210 $M train --resume full.safetensors
has "'full.safetensors' was written by a different model or compiler (hash 0123456789abcdef, this binary fedcba9876543210)"
st badjson.safetensors '{"model.w": [1,,' 0
run 1 $M eval --load badjson.safetensors; has "'badjson.safetensors': the header is not valid JSON"
st shape.safetensors '{"model.w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"model.b":{"dtype":"F32","shape":[],"data_offsets":[12,16]}}' 16
run 1 $M eval --load shape.safetensors; has "tensor 'model.w' has shape [3], but the model declares f32[2]"
st lacks.safetensors '{"model.w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}' 16
run 1 $M eval --load lacks.safetensors; has "'lacks.safetensors' lacks 1 of the model's tensors: model.b"
st extra.safetensors '{"model.w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"model.b":{"dtype":"I32","shape":[],"data_offsets":[16,20]},"model.v":{"dtype":"F32","shape":[],"data_offsets":[20,24]}}' 24
run 1 $M eval --load extra.safetensors; has "tensor(s) the model does not declare: model.v"
st plain.safetensors '{"model.w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"model.b":{"dtype":"I32","shape":[],"data_offsets":[16,20]}}' 20
run 0 $M eval --load plain.safetensors; has "metrics: w0 0.0000"
run 1 $M train --resume plain.safetensors; has "is not a training checkpoint"
run 1 $M eval --load nothere.safetensors; has "cannot open 'nothere.safetensors'"

# -- eval, grad, procedures --------------------------------------------------------------
run 0 $M eval --load full.safetensors; has "eval test: loss 0.3001  mae 0.4261"
run 0 $M eval; has "note: no --load given"
# A batch x = [[1,0],[0,1]], y = [3,-2] as F32; 1.0f is 00 00 80 3f.
printf '\160\000\000\000\000\000\000\000{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"y":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}\000\000\200\077\000\000\000\000\000\000\000\000\000\000\200\077\000\000\100\100\000\000\000\300' >batch.safetensors
run 0 $M grad --load full.safetensors --batch batch.safetensors --out grads.safetensors; has "loss "; has "wrote 3 tensors"
if grep -qF '"grad.model.w":{"dtype":"F32","shape":[2]' grads.safetensors; then ok; else fail "grads.safetensors header"; fi
run 1 $M grad --batch plain.safetensors --out g.safetensors; has "has no tensor 'x' for @grad.step0"
run 2 $M grad --batch batch.safetensors; has "grad needs --out"
run 1 $M grad --step 3 --batch batch.safetensors --out g.safetensors; has "no function grad.step3"
run 0 $M predict --load full.safetensors --in x=batch.safetensors; has "f32[2] ["
run 1 $M predict --in x=1,2; has "does not fit f32 input of rank 2"
run 2 $M predict; has "needs its input 'x'"
run 0 $M images --out imgs.safetensors; has "wrote image grid 'imgs.png'"
if [ -s imgs.safetensors ] && [ "$(od -An -tx1 -N8 imgs.png | tr -d ' ')" = "89504e470d0a1a0a" ]; then ok; else fail "images outputs"; fi

# -- bench -------------------------------------------------------------------------------
run 0 $M bench --help; has "--warmup N"; has "--json"
run 0 $M bench --steps 5 --warmup 2 --threads 1
has "bench linreg: 5 steps after 2 warm-up, batch 32 (generated data), 1 thread"; has "ms/step   median "; has "loss      first 5.1481"; has "peak RSS"
run 0 $M bench --steps 4 --warmup 0 --batch 16 --json
has '{"module":"linreg","batch":16,'; has '"steps":4,"warmup":0,"seed":7,"data":"generated","median_ms":'; has '"peak_rss_mb":'
if ! command -v python3 >/dev/null; then ok; elif python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["times_ms"]) == 4 and d["p10_ms"] <= d["median_ms"] <= d["p90_ms"]' out 2>/dev/null; then ok; else fail "bench --json output"; fi
run 0 env MDL_TEST_MODEL=digits $M bench --steps 3; has "batch 32 (random inputs)"
run 1 env MDL_TEST_MODEL=mutag $M bench --steps 3; has "has the size 'N', which bench cannot choose"
run 2 $M bench --steps 0; has "--steps: expected a positive integer"

# -- numerics ----------------------------------------------------------------------------
run 1 env MDL_TEST_NAN_AT=5 $M train; has "error: loss is nan at step 5 (update @step0); run with --check-numerics"
run 1 env MDL_TEST_NAN_AT=5 $M train --check-numerics
has "non-finite value first produced by op #42 in @step0: %42 = div %40, %41 : f32[]"

# -- random numbers (expected values computed from docs/RUNTIME.md's definition) ----------
run 0 ./internals rng
has "uniform(1,2,3) = 0.088819026947021484"; has "normal(1,2,3) = -0.80689492359249626"; has "fold(5,7) = -616107885"
has 'fnv1a32("model.fc1.w") = 414777849'
cat out
run 0 ./internals json
run 0 ./internals gemm; has "1 and 2 threads agree"

# -- data sets ---------------------------------------------------------------------------
run 1 env MDL_TEST_MODEL=digits $M train --data nowhere/digits
has "error: no digits data in 'nowhere/digits' (missing digits.csv.gz). Fetch it with: Tools/fetch-data digits"
run 1 env MDL_TEST_MODEL=pixels $M train --data nowhere
has "error: no MNIST data in 'nowhere' (missing train-images-idx3-ubyte). Fetch it with: Tools/fetch-data mnist"
if [ -d "$DATA/mnist" ] && [ -d "$DATA/digits" ] && [ -d "$DATA/shakespeare" ] && [ -d "$DATA/mutag" ]; then
    gzip -c "$DATA/mnist/t10k-labels-idx1-ubyte" >labels.gz
    run 0 ./internals gunzip labels.gz "$DATA/mnist/t10k-labels-idx1-ubyte"; has "match"
    mkdir -p gz && gzip -c "$DATA/mnist/t10k-images-idx3-ubyte" >gz/t10k-images-idx3-ubyte.gz
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-labels-idx1-ubyte; do ln -s "$DATA/mnist/$f" gz/$f; done
    run 0 ./internals data mnist gz; has "mnist test: 10000 examples"; has "test.y i32[10000] min 0 max 9 mean 4.443400 first 7"
    run 0 ./internals data mnist "$DATA/mnist"
    has "mnist train: 60000 examples"; has "train.x f32[60000,784] min 0 max 1 mean 0.130660 first 0"
    has "train.y i32[60000] min 0 max 9 mean 4.453933 first 5"; has "test.y i32[10000] min 0 max 9 mean 4.443400 first 7"
    if [ -d "$DATA/fashion" ]; then
        run 0 ./internals data fashion_mnist "$DATA/fashion"; has "fashion_mnist train: 60000 examples"; has "train.y i32[60000] min 0 max 9 mean 4.500000 first 9"
    fi
    run 0 ./internals data digits "$DATA/digits"
    has "digits train: 1437 examples"; has "digits test: 360 examples"; has "train.x f32[1437,64] min 0 max 1"; has "test.y i32[360] min 0 max 9 mean 4.502778 first 2"
    run 0 ./internals data shakespeare "$DATA/shakespeare" 128
    has "shakespeare train: 33665 examples"; has "train.x i32[33665,128] min 0 max 91"; has "first 53"; has "train.y i32[33665,128] min 0 max 91 mean 57.145022 first 41"
    run 0 ./internals data mutag "$DATA/mutag"
    has "mutag train: 188 examples"; has "y 1 0 0, N 46, E 102"; has "holdout: 170 train, 18 test (first test row 9)"
    run 0 ./internals data mnist_graphs "$DATA/mnist"; has "graphs 0, 1, last: y 5 0 8, N 2352, E 9072"

    # Whole runs through the readers and batchers.
    run 0 env MDL_TEST_MODEL=digits $M train --data "$DATA/digits" --quiet
    acc=$(grep "eval test" out | tail -1 | sed 's/.*accuracy \([0-9.]*\).*/\1/')
    if awk "BEGIN { exit !($acc > 0.85) }"; then ok; else fail "digits softmax regression reached accuracy $acc"; fi
    run 0 env MDL_TEST_MODEL=mutag $M train --data "$DATA/mutag" --quiet
    has "mean over 10 folds:  test.positive 0.6652"; has "test.nodes_per_graph 17.9374"
    run 0 env MDL_TEST_MODEL=mutag $M eval --load mutag_check.safetensors --data "$DATA/mutag"; has "fold 10/10  eval test"
    run 0 env MDL_TEST_MODEL=pixels $M train --data "$DATA/mnist" --quiet
    has "eval test: positive 0.1135  nodes_per_graph 784.0000  edges_per_graph 3024.0000"
else
    echo "SKIP: data sets (run Tools/fetch-data all; looked in $DATA)"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
