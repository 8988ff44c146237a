#!/bin/sh
# Benchmarks `tlsactl create` against hash-slinger's `tlsa --create` and
# ldns-dane, whole process each, then batch throughput over N certificate
# files. Needs go, openssl, hyperfine, hash-slinger (tlsa), ldnsutils
# (ldns-dane), python3. Results go to bench/out/ (gitignored).
#
#   sh bench/create.sh            # N=20000
#   N=5000 sh bench/create.sh
set -eu
cd "$(dirname "$0")/.."
N=${N:-20000}
OUT=bench/out
mkdir -p "$OUT"
for c in go openssl hyperfine tlsa ldns-dane python3; do
	command -v "$c" >/dev/null || { echo "bench/create.sh: $c not found" >&2; exit 2; }
done

go build -o "$OUT/tlsactl" ./cmd/tlsactl
T=$(pwd)/$OUT/tlsactl
HOST=mail.example.nl

# One ECDSA P-256 and one RSA-2048 server certificate (CA:FALSE).
for k in ecdsa rsa; do
	case $k in
	ecdsa) newkey="-newkey ec -pkeyopt ec_paramgen_curve:P-256" ;;
	rsa) newkey="-newkey rsa:2048" ;;
	esac
	# shellcheck disable=SC2086
	openssl req -x509 $newkey -nodes -keyout "$OUT/$k.key" -out "$OUT/$k.pem" -subj "/CN=$HOST" \
		-days 30 -addext basicConstraints=critical,CA:FALSE 2>/dev/null
	# All three tools must agree before they are timed.
	a=$("$T" create --usage 3 --selector 1 --certificate "$OUT/$k.pem" $HOST | awk '{print $NF}')
	b=$(tlsa --create --port 25 --usage 3 --selector 1 --certificate "$OUT/$k.pem" $HOST | awk '/^_25/{print $NF}')
	c=$(ldns-dane -c "$OUT/$k.pem" create $HOST 25 3 1 1 | awk '{print $NF}')
	if [ "$a" != "$b" ] || [ "$a" != "$c" ]; then
		echo "bench/create.sh: $k: tools disagree: tlsactl $a, hash-slinger $b, ldns-dane $c" >&2
		exit 1
	fi
	hyperfine -N --warmup 3 --export-json "$OUT/single-$k.json" \
		-n tlsactl "$T create --usage 3 --selector 1 --certificate $OUT/$k.pem $HOST" \
		-n hash-slinger "tlsa --create --port 25 --usage 3 --selector 1 --certificate $OUT/$k.pem $HOST" \
		-n ldns-dane "ldns-dane -c $OUT/$k.pem create $HOST 25 3 1 1"
done

# Batch: N files, one process.
rm -rf "$OUT/certs"
go run ./bench/gencerts -n "$N" -dir "$OUT/certs"
lines=$("$T" create --certificate "$OUT/certs/*.pem" $HOST | wc -l)
[ "$lines" -eq "$N" ] || { echo "bench/create.sh: batch printed $lines lines, want $N" >&2; exit 1; }
hyperfine --warmup 1 --runs 5 --export-json "$OUT/batch.json" \
	-n "tlsactl batch $N" "$T create --certificate '$OUT/certs/*.pem' $HOST > /dev/null"

python3 - "$OUT" "$N" <<'PY' | tee "$OUT/summary.txt"
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
def load(f):
    return {r["command"]: r for r in json.load(open(f"{out}/{f}"))["results"]}
ok = True
# Ratios use the median: this is a whole-process timing of a few ms, and a
# busy machine adds outliers that skew the mean.
print(f"{'cert':6} {'tool':13} {'median ms':>9} {'mean ms':>9} {'± ms':>7} {'min ms':>8}")
for k in ("ecdsa", "rsa"):
    r = load(f"single-{k}.json")
    for name in ("tlsactl", "hash-slinger", "ldns-dane"):
        x = r[name]
        print(f"{k:6} {name:13} {x['median']*1e3:9.2f} {x['mean']*1e3:9.2f} {x['stddev']*1e3:7.2f} {x['min']*1e3:8.2f}")
    t, h, l = (r[c]["median"] for c in ("tlsactl", "hash-slinger", "ldns-dane"))
    hs, ld = h / t, l / t
    ok &= hs >= 50 and ld >= 1
    print(f"{k:6} hash-slinger/tlsactl = {hs:.1f}x (target >= 50x)   ldns-dane/tlsactl = {ld:.2f}x (target >= 1x)")
b = load("batch.json")[f"tlsactl batch {n}"]
rps = n / b["median"]
ok &= rps >= 20000
print(f"batch  {n} files: median {b['median']:.3f} s (min {b['min']:.3f} s) = {rps:,.0f} records/s (best {n/b['min']:,.0f}; target >= 20,000)")
print("all targets met" if ok else "TARGET MISSED")
PY
