"""How differently a key's items are matched by the shadow models stored in it, and what
three nulls would make of a complete match: the worst-shadow bound nnmark uses, per-item
99% Clopper-Pearson bounds, and per-item point estimates (no guarantee). Standard library
only; reads the key file directly (safetensors header + the `calibration` note).

Run: python3 tools/per_item_rates.py owner.nnkey
"""
import json
import math
import struct
import sys


def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    start, end = header["trigger.labels"]["data_offsets"]
    labels = list(raw[8 + n + start : 8 + n + end])
    key = json.loads(header["__metadata__"]["nnmark-key"])
    meta = json.loads(key["meta"]) if isinstance(key["meta"], str) else key["meta"]
    note = meta.get("notes", {}).get("calibration")
    if note is None:
        sys.exit(f"{path}: the key holds no shadow calibration")
    cal = json.loads(note) if isinstance(note, str) else note
    return labels, cal


def upper_tail(k, n, p):
    """P(Binomial(n, p) >= k)."""
    if k <= 0:
        return 1.0
    return min(
        1.0,
        sum(
            math.exp(
                math.lgamma(n + 1)
                - math.lgamma(i + 1)
                - math.lgamma(n - i + 1)
                + i * math.log(p)
                + (n - i) * math.log1p(-p)
            )
            for i in range(k, n + 1)
        ),
    )


def clopper_pearson_upper(k, n, confidence):
    """One-sided upper bound: the p at which P(Binomial(n, p) <= k) = 1 - confidence."""
    if k == n:
        return 1.0
    lo, hi = k / n, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 1 - upper_tail(k + 1, n, mid) > 1 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


def main():
    labels, cal = load(sys.argv[1])
    shadows = cal["shadows"]
    k_count, n_items = len(shadows), len(labels)
    hits = [[int(s["answers"][i] == labels[i]) for i in range(n_items)] for s in shadows]
    per_item = [sum(h[i] for h in hits) for i in range(n_items)]
    print(f"{n_items} items, {k_count} shadows matching {[sum(h) for h in hits]}")
    print("items matched by j shadows:", {j: per_item.count(j) for j in range(k_count + 1)})
    pooled = max(clopper_pearson_upper(sum(h), n_items, 0.99) for h in hits)
    print(f"worst-shadow 99% bound p0 = {pooled:.4f}: P(all match) <= {pooled ** n_items:.3e}")
    bounds = [clopper_pearson_upper(j, k_count, 0.99) for j in per_item]
    print(f"per-item 99% bounds (mean {sum(bounds) / n_items:.3f}): P(all match) <= {math.prod(bounds):.3e}")
    guesses = [(j + 0.5) / (k_count + 1) for j in per_item]
    print(f"per-item estimates (mean {sum(guesses) / n_items:.3f}), no guarantee: {math.prod(guesses):.3e}")


if __name__ == "__main__":
    main()
