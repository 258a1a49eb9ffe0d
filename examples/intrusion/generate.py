"""Write a synthetic, seeded network-flow dataset for the intrusion classifier.

Each row is one connection summarised the way NSL-KDD-style feature extractors do (volume,
flags, login outcome, and "traffic" counts over a short window to the same host/service).
Classes: normal, dos, probe, r2l, u2r, imbalanced as in real traffic. To keep the task
honest rather than trivially separable:
  * every attack family has a low-and-slow / stealthy variant that looks much like normal;
  * some attack rows borrow a few feature values from random normal rows (blended captures);
  * a small fraction of labels is flipped (analyst labelling noise).

    python examples/intrusion/generate.py            # writes examples/intrusion/flows.csv
    python examples/intrusion/generate.py --out flows.csv --rows 20000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

PROTOCOLS = {"tcp": 0, "udp": 1, "icmp": 2}
SERVICES = {"http": 0, "smtp": 1, "ftp": 2, "ssh": 3, "dns": 4, "telnet": 5, "other": 6}
FEATURES = [
    "duration", "protocol", "service", "src_bytes", "dst_bytes", "packets",
    "syn_count", "fin_count", "rst_count", "urgent", "wrong_fragment",
    "failed_logins", "logged_in", "root_shell", "file_creations",
    "count", "srv_count", "same_srv_rate", "diff_srv_rate", "serror_rate", "rerror_rate",
    "dst_host_count", "dst_host_srv_count",
]
CLASS_PRIORS = {"normal": 0.62, "dos": 0.20, "probe": 0.10, "r2l": 0.06, "u2r": 0.02}
BLEND_FRACTION = 0.35  # attack rows that borrow some features from a normal row
LABEL_NOISE = 0.03


def _choice(rng: np.random.Generator, options: dict[str, int], probs: list[float], n: int) -> np.ndarray:
    return rng.choice(list(options.values()), size=n, p=probs)


def _rates(rng: np.random.Generator, n: int, same: tuple, diff: tuple, serr: tuple, rerr: tuple) -> dict:
    """Window rates are Beta-distributed: fractions in [0, 1] with a class-specific mode."""
    return {
        "same_srv_rate": rng.beta(*same, n), "diff_srv_rate": rng.beta(*diff, n),
        "serror_rate": rng.beta(*serr, n), "rerror_rate": rng.beta(*rerr, n),
    }


def normal(rng: np.random.Generator, n: int) -> dict:
    service = _choice(rng, SERVICES, [0.48, 0.14, 0.07, 0.08, 0.15, 0.02, 0.06], n)
    protocol = np.where(service == SERVICES["dns"], PROTOCOLS["udp"], PROTOCOLS["tcp"])
    protocol = np.where(rng.random(n) < 0.03, PROTOCOLS["icmp"], protocol)  # pings
    src = rng.lognormal(6.0, 1.2, n)
    dst = rng.lognormal(8.0, 1.6, n)
    auth = np.isin(service, [SERVICES["ssh"], SERVICES["ftp"], SERVICES["telnet"], SERVICES["smtp"]])
    count = rng.poisson(8, n)
    return {
        "duration": rng.lognormal(0.0, 1.5, n), "protocol": protocol, "service": service,
        "src_bytes": src, "dst_bytes": dst, "packets": 2 + rng.poisson((src + dst) / 900),
        "syn_count": np.ones(n), "fin_count": rng.integers(1, 3, n), "rst_count": rng.random(n) < 0.04,
        "urgent": rng.random(n) < 0.002, "wrong_fragment": rng.random(n) < 0.002,
        "failed_logins": rng.poisson(0.04, n) * auth, "logged_in": auth & (rng.random(n) < 0.93),
        "root_shell": rng.random(n) < 0.004, "file_creations": rng.poisson(0.15, n),
        "count": count, "srv_count": rng.binomial(count, 0.7),
        **_rates(rng, n, (8, 2), (1, 10), (1, 30), (1, 30)),
        "dst_host_count": rng.poisson(60, n), "dst_host_srv_count": rng.poisson(40, n),
    }


def dos(rng: np.random.Generator, n: int) -> dict:
    """SYN floods, ICMP/UDP floods, and low-rate floods that hide in ordinary traffic levels."""
    row = normal(rng, n)
    kind = rng.choice(3, size=n, p=[0.5, 0.25, 0.25])  # 0 syn flood, 1 icmp/udp flood, 2 low-rate
    flood = kind < 2
    count = np.where(flood, rng.poisson(140, n), rng.poisson(28, n))
    row.update({
        "duration": np.where(flood, rng.exponential(0.05, n), row["duration"]),
        "protocol": np.select([kind == 0, kind == 1], [PROTOCOLS["tcp"], rng.choice([1, 2], size=n)],
                              PROTOCOLS["tcp"]),
        "service": np.where(kind == 1, SERVICES["other"], _choice(rng, SERVICES, [0.6, 0.1, 0, 0, 0, 0, 0.3], n)),
        "src_bytes": np.where(kind == 0, 0.0, np.where(kind == 1, rng.normal(1032, 60, n), row["src_bytes"] / 3)),
        "dst_bytes": np.where(flood, 0.0, row["dst_bytes"] / 4),
        "packets": np.where(flood, rng.integers(1, 3, n), row["packets"]),
        "fin_count": np.where(kind == 0, 0, row["fin_count"]),
        "rst_count": np.where(kind == 0, rng.random(n) < 0.3, row["rst_count"]),
        "wrong_fragment": np.where(kind == 1, rng.poisson(0.4, n), row["wrong_fragment"]),
        "logged_in": np.where(flood, 0, row["logged_in"]),
        "count": count, "srv_count": rng.binomial(count, np.where(flood, 0.95, 0.6)),
        "dst_host_count": np.minimum(255, rng.poisson(np.where(flood, 200, 90), n)),
        "dst_host_srv_count": np.minimum(255, rng.poisson(np.where(flood, 180, 50), n)),
    })
    row.update({k: np.where(kind == 2, rng.beta(a, b, n), rng.beta(c, d, n)) for k, (a, b, c, d) in {
        "serror_rate": (2, 5, 20, 2), "same_srv_rate": (5, 3, 20, 1), "diff_srv_rate": (1, 8, 1, 30),
    }.items()})
    return row


def probe(rng: np.random.Generator, n: int) -> dict:
    """Port/host scans; a third are slow scans spread over time (few connections per window)."""
    row = normal(rng, n)
    slow = rng.random(n) < 0.35
    count = np.where(slow, rng.poisson(4, n), rng.poisson(25, n))
    row.update({
        "duration": rng.exponential(0.3, n),
        "protocol": np.where(rng.random(n) < 0.8, PROTOCOLS["tcp"], PROTOCOLS["icmp"]),
        "service": rng.integers(0, len(SERVICES), n),
        "src_bytes": rng.lognormal(3.0, 1.5, n), "dst_bytes": rng.lognormal(2.0, 2.0, n) * (rng.random(n) < 0.3),
        "packets": rng.integers(1, 4, n), "rst_count": rng.random(n) < 0.7, "fin_count": rng.integers(0, 2, n),
        "logged_in": np.zeros(n), "count": count, "srv_count": rng.binomial(count, 0.15),
        **_rates(rng, n, (2, 6), (6, 2), (2, 8), (7, 3)),
        "dst_host_count": np.minimum(255, rng.poisson(np.where(slow, 70, 180), n)),
        "dst_host_srv_count": rng.poisson(12, n),
    })
    for key, mix in (("same_srv_rate", (8, 2)), ("diff_srv_rate", (1, 10)), ("rerror_rate", (2, 6))):
        row[key] = np.where(slow & (rng.random(n) < 0.5), rng.beta(*mix, n), row[key])
    return row


def r2l(rng: np.random.Generator, n: int) -> dict:
    """Password guessing and warez/ftp abuse; traffic counts stay at normal levels."""
    row = normal(rng, n)
    guessing = rng.random(n) < 0.55
    row.update({
        "protocol": np.full(n, PROTOCOLS["tcp"]),
        "service": _choice(rng, SERVICES, [0.15, 0.15, 0.3, 0.2, 0, 0.15, 0.05], n),
        "duration": rng.lognormal(1.5, 1.5, n),
        "src_bytes": np.where(guessing, rng.lognormal(5.5, 0.8, n), rng.lognormal(9.5, 1.5, n)),
        "failed_logins": np.where(guessing, rng.poisson(2.2, n), rng.poisson(0.2, n)),
        "logged_in": np.where(guessing, rng.random(n) < 0.25, rng.random(n) < 0.9),
        "file_creations": rng.poisson(np.where(guessing, 0.1, 1.0), n),
        "dst_host_srv_count": rng.poisson(20, n),
    })
    return row


def u2r(rng: np.random.Generator, n: int) -> dict:
    """Local privilege escalation over an interactive session: long, logged in, often a root shell."""
    row = normal(rng, n)
    row.update({
        "protocol": np.full(n, PROTOCOLS["tcp"]),
        "service": _choice(rng, SERVICES, [0.05, 0, 0.25, 0.3, 0, 0.4, 0], n),
        "duration": rng.lognormal(3.5, 1.2, n), "src_bytes": rng.lognormal(7.5, 1.2, n),
        "logged_in": rng.random(n) < 0.95, "root_shell": rng.random(n) < 0.55,
        "file_creations": rng.poisson(1.8, n), "failed_logins": rng.poisson(0.3, n),
        "count": rng.poisson(2, n), "srv_count": rng.poisson(1, n),
    })
    return row


GENERATORS = {"normal": normal, "dos": dos, "probe": probe, "r2l": r2l, "u2r": u2r}


def generate(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (X [rows, len(FEATURES)], labels [rows]) in shuffled order."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(rows, list(CLASS_PRIORS.values()))
    blocks, labels = [], []
    for (name, gen), n in zip(GENERATORS.items(), counts, strict=True):
        cols = gen(rng, n)
        blocks.append(np.column_stack([np.asarray(cols[f], dtype=float) for f in FEATURES]))
        labels += [name] * n
    X, y = np.vstack(blocks), np.array(labels)
    _blend_with_normal(rng, X, y)
    _flip_labels(rng, y)
    order = rng.permutation(rows)
    return X[order], y[order]


def _blend_with_normal(rng: np.random.Generator, X: np.ndarray, y: np.ndarray) -> None:
    """Copy 4-12 random features from a random normal row into some attack rows."""
    normal_rows = np.flatnonzero(y == "normal")
    for i in np.flatnonzero((y != "normal") & (rng.random(len(y)) < BLEND_FRACTION)):
        cols = rng.choice(len(FEATURES), size=rng.integers(4, 13), replace=False)
        X[i, cols] = X[rng.choice(normal_rows), cols]


def _flip_labels(rng: np.random.Generator, y: np.ndarray) -> None:
    names = np.array(list(CLASS_PRIORS))
    for i in np.flatnonzero(rng.random(len(y)) < LABEL_NOISE):
        y[i] = rng.choice(names[names != y[i]])


def write_csv(path: Path, X: np.ndarray, y: np.ndarray) -> None:
    integral = [f not in {"duration", "same_srv_rate", "diff_srv_rate", "serror_rate", "rerror_rate"}
                for f in FEATURES]
    X = np.maximum(X, 0.0)  # byte counts drawn from a normal can dip below zero
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([*FEATURES, "label"])
        for row, label in zip(X, y, strict=True):
            out.writerow([round(float(v)) if whole else round(float(v), 4)
                          for v, whole in zip(row, integral, strict=True)] + [label])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "flows.csv")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    X, y = generate(args.rows, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.out, X, y)
    names, counts = np.unique(y, return_counts=True)
    mix = ", ".join(f"{n} {c / len(y):.1%}" for n, c in zip(names, counts, strict=True))
    print(f"wrote {args.out}: {len(y)} flows, {len(FEATURES)} features ({mix})")


if __name__ == "__main__":
    main()
