"""Benchmark SASRec on Amazon Beauty: ranking quality, training time, and ONNX vs PyTorch serving.

Protocol (the data README's): ``train, valid, test = ps.split.leave_last_out(inter)``. SASRec is
fitted on ``train`` with early stopping on the validation targets (NDCG@10, ``--patience``
epochs), then scored on the test targets (HR / NDCG @ 5, 10, 20; full ranking, seen items
excluded, ``ps.evaluate``). At test time the model must see each user's validation item too:

- ``--test-history extend`` (default): the trained model is kept and only the users' histories are
  replaced by those of ``train + valid`` (``user_tokens_`` and the seen-items matrix). This is the
  SASRec papers' protocol -- the network never trains on the validation item, it only reads it --
  and what a shop does between retrainings.
- ``--test-history refit``: a new model is fitted on ``train + valid`` for the best epoch count
  found on validation (twice the training time).
- ``--test-history default``: what a plain ``SASRec(...).fit(train + valid)`` does (``valid="auto"``:
  each user's last event -- here the validation target -- is held out for early stopping, then the
  full histories are read back); the time a user waits for a default fit.

Most popular (fitted on train + valid) is the floor, in the same run. Serving: the same trained
encoder run by onnxruntime and by PyTorch eager (``torch.no_grad``, same thread count) on
single-user requests (p50 / p99 of the encoder alone, and of a whole ``recommend`` call through
onnxruntime) and on batches of 256 users (users/s).

Writes ``sasrec.json`` / ``.md`` (``sasrec-quick.*`` with ``--quick``) to ``benchmarks/results/``.

    python benchmarks/bench_sasrec.py                       # the full run (about 15+ min on 2 cores)
    python benchmarks/bench_sasrec.py --quick               # 3000 users, a few epochs: a smoke test
    python benchmarks/bench_sasrec.py --epochs 100 --factors 64 --blocks 2 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import persona as ps  # noqa: E402
from common import default_beauty, eval_row, fit_and_eval, sample_users, write_results  # noqa: E402
from machine import machine_facts  # noqa: E402
from persona.data import Interactions  # noqa: E402
from persona.models.sasrec import SASRec  # noqa: E402

KS = (5, 10, 20)



def with_histories(model: SASRec, inter: Interactions) -> SASRec:
    """A copy of ``model`` that reads the users' histories of ``inter`` (the public update_histories)."""
    return copy.copy(model).update_histories(inter)


def percentiles(times: list[float]) -> dict:
    a = np.asarray(times) * 1e6
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean())}


def serving(model: SASRec, args) -> dict:
    """Encoder latency and throughput: onnxruntime vs PyTorch eager on the same weights."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    net = model._network
    net.eval()
    with torch.no_grad():
        table = net.table().detach()  # the item table, computed once as in the exported graph
    rng = np.random.default_rng(args.seed)
    users = rng.choice(model.n_users, size=min(args.requests, model.n_users), replace=False)
    tokens = model.user_tokens_.astype(np.int64)
    warm = tokens[users[:20]]
    for row in warm:  # warm both runtimes (session creation, allocator)
        model.encoder_.run(row[None, :])
        with torch.no_grad():
            net.encode(torch.from_numpy(row[None, :]), table)[:, -1, :]

    onnx_t, torch_t, rec_t = [], [], []
    uid = model.user_map_.ids
    # each runtime in its own loop: PyTorch's idle worker threads spin for a while after each call
    # and would slow whatever follows them on a small machine, so nothing is interleaved
    for u in users:
        x = tokens[u:u + 1]
        t = time.perf_counter()
        model.encoder_.run(x)
        onnx_t.append(time.perf_counter() - t)
    for u in users:
        xt = torch.from_numpy(tokens[u:u + 1])
        t = time.perf_counter()
        with torch.no_grad():
            net.encode(xt, table)[:, -1, :].numpy()
        torch_t.append(time.perf_counter() - t)
    time.sleep(0.5)
    for u in users:
        t = time.perf_counter()
        model.recommend(uid[u], n=10)
        rec_t.append(time.perf_counter() - t)
    # the web-worker setting: one thread for onnxruntime, BLAS and OpenMP alike
    from threadpoolctl import threadpool_limits

    from persona.onnx import OnnxModel

    single = copy.copy(model)
    single.encoder_ = OnnxModel(model.encoder_onnx_, intra_op_threads=1)
    rec1_t = []
    with threadpool_limits(1):
        for u in users[:20]:
            single.recommend(uid[u], n=10)
        for u in users:
            t = time.perf_counter()
            single.recommend(uid[u], n=10)
            rec1_t.append(time.perf_counter() - t)

    batch = tokens[rng.choice(model.n_users, size=256, replace=model.n_users < 256)]
    bt = torch.from_numpy(batch)

    def throughput(fn) -> float:
        fn()
        reps, t = 0, time.perf_counter()
        while reps < 3 or time.perf_counter() - t < args.batch_seconds:
            fn()
            reps += 1
        return 256 * reps / (time.perf_counter() - t)

    def torch_batch():
        with torch.no_grad():
            net.encode(bt, table)[:, -1, :].numpy()

    onnx_tp = throughput(lambda: model.encoder_.run(batch))
    torch_tp = throughput(torch_batch)
    onnx_single, torch_single = percentiles(onnx_t), percentiles(torch_t)
    return {"requests": len(users), "onnx_single": onnx_single, "torch_single": torch_single,
            "recommend_single_onnx": percentiles(rec_t), "recommend_single_onnx_1thread": percentiles(rec1_t),
            "onnx_batch256_users_per_s": onnx_tp, "torch_batch256_users_per_s": torch_tp,
            "single_p50_ratio_onnx_over_torch": onnx_single["p50_us"] / torch_single["p50_us"],
            "batch_throughput_ratio_onnx_over_torch": onnx_tp / torch_tp,
            "torch_threads": torch.get_num_threads(), "onnx_providers": model.encoder_.session.get_providers()}


def run(args) -> dict:
    data = args.data or default_beauty()
    if data is None or not Path(data).exists():
        raise SystemExit("no data: pass --data PATH (a `user item item ...` file such as Beauty.txt)")
    seq = ps.datasets.load_sequences(data)
    inter = sample_users(seq.interactions, args.max_users, args.seed)
    train, valid, test = ps.split.leave_last_out(inter)
    attributes = seq.attribute_matrix(train) if args.attributes and seq.n_attributes else None
    if args.attributes and attributes is None:
        raise SystemExit(f"--attributes: no item attribute file beside {data}")
    full = train.concat(valid)
    print(f"{Path(data).name}: {inter.n_users} users, {inter.n_items} items, {len(inter)} events; "
          f"{len(test)} test targets", flush=True)
    rows = []

    def add(name, model, fit_s, extra=None):
        return eval_row(rows, name, model, test, fit_s, extra)

    fit_and_eval(rows, "most popular", lambda: ps.MostPopular().fit(full), test)

    params = dict(factors=args.factors, blocks=args.blocks, heads=args.heads, max_len=args.max_len,
                  dropout=args.dropout, learning_rate=args.learning_rate, epochs=args.epochs,
                  batch_size=args.batch_size, patience=args.patience, loss=args.loss, negatives=args.negatives,
                  lr_schedule=args.lr_schedule, output_precision=args.output_precision, contrastive=args.contrastive, random_state=args.seed, num_threads=args.threads, show_progress=args.progress)
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    if args.test_history == "default":
        # what a user's plain fit does: SASRec(...).fit(train + valid) holds out each user's last
        # event (here: the validation target) for early stopping, then reads the full histories
        model = SASRec(**params).fit(full, item_attributes=None if attributes is None else seq.attribute_matrix(full))
    else:
        model = SASRec(**params).fit(train, valid=valid, item_attributes=attributes)
    fit_s = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of this process: on a machine shared with other work the wall time stretches,
    # CPU time / threads is what the fit takes on the cores alone
    fit_cpu_s = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    best = model.history_[model.best_epoch_ - 1]
    print(f"  SASRec trained {len(model.history_)} epochs in {fit_s:.1f} s; best epoch {model.best_epoch_} "
          f"(valid NDCG@10 {best['valid_ndcg@10']:.4f})", flush=True)
    extra = {"epochs_run": len(model.history_), "best_epoch": model.best_epoch_, "fit_cpu_s": fit_cpu_s,
             "valid_ndcg@10": best["valid_ndcg@10"], "valid_hr@10": best["valid_hr@10"],
             "s_per_epoch": fit_s / len(model.history_)}
    if args.test_history == "default":
        tested = model
        add("persona SASRec (default fit on train+valid: valid='auto')", tested, fit_s, extra)
    elif args.test_history == "extend":
        tested = with_histories(model, full)
        add("persona SASRec (train, early stop; test reads train+valid)", tested, fit_s, extra)
    else:
        t = time.perf_counter()
        tested = SASRec(**{**params, "epochs": model.best_epoch_}).fit(
            full, item_attributes=None if attributes is None else seq.attribute_matrix(full))
        add(f"persona SASRec (refit on train+valid, {model.best_epoch_} epochs)", tested,
            fit_s + time.perf_counter() - t, extra)

    serve = None if args.skip_serving else serving(tested, args)
    if serve:
        print(f"  encoder single p50: onnx {serve['onnx_single']['p50_us']:.0f} us, torch "
              f"{serve['torch_single']['p50_us']:.0f} us; batch 256: onnx {serve['onnx_batch256_users_per_s']:.0f} "
              f"users/s, torch {serve['torch_batch256_users_per_s']:.0f} users/s", flush=True)
    return {"data": str(data), "n_users": inter.n_users, "n_items": inter.n_items, "n_events": len(inter),
            "protocol": "leave-last-out; SASRec fitted on train with early stopping on valid NDCG@10; "
                        f"test history: {args.test_history}; most popular fitted on train+valid; test "
                        "targets, full ranking, seen items excluded",
            "params": {**params, "test_history": args.test_history, "max_users": args.max_users,
                       "quick": args.quick, "attributes": attributes is not None,
                       "n_attributes": 0 if attributes is None else attributes.shape[1]},
            "rows": rows, "history": model.history_, "serving": serve,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "machine": {**machine_facts(), "usable_cores": len(os.sched_getaffinity(0))
                        if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}}


def markdown(res: dict) -> str:
    f, p, s = res["machine"], res["params"], res["serving"]
    lines = [
        f"# SASRec on {Path(res['data']).stem}" + (" (quick)" if p["quick"] else ""),
        "",
        f"{res['n_users']} users, {res['n_items']} items, {res['n_events']} events. {res['protocol']}.",
        "",
        f"SASRec: factors {p['factors']}, blocks {p['blocks']}, heads {p['heads']}, max_len {p['max_len']}, "
        f"dropout {p['dropout']}, learning rate {p['learning_rate']}, batch {p['batch_size']}, at most "
        f"{p['epochs']} epochs, patience {p['patience']}, loss "
        + ("full-softmax cross-entropy" if p["loss"] == "ce" else f"sampled softmax ({p['negatives']} negatives, logQ)")
        + (f", item attributes ({p['n_attributes']})" if p.get("attributes") else ", no item attributes")
        + f", seed {p['random_state']}, threads {p['num_threads'] or 'all'}.",
        f"Machine: {f.get('processor')}, {f.get('usable_cores')} usable cores, Python {f.get('python')}, torch "
        f"{f.get('torch')}, onnxruntime {f.get('onnxruntime')}, persona {f.get('persona')}.",
        "",
        "| model | " + " | ".join(f"HR@{k} | NDCG@{k}" for k in KS) + " | fit s | eval s |",
        "|---|" + "---:|" * (2 * len(KS) + 2),
    ]
    for r in res["rows"]:
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[f'hr@{k}']:.4f} | {r[f'ndcg@{k}']:.4f}" for k in KS)
                     + f" | {r['fit_s']:.2f} | {r['eval_s']:.2f} |")
    sr = next(r for r in res["rows"] if r["model"].startswith("persona SASRec"))
    lines += ["", f"Training: {sr['epochs_run']} epochs ({sr['s_per_epoch']:.2f} s each), best epoch "
                  f"{sr['best_epoch']} with valid NDCG@10 {sr['valid_ndcg@10']:.4f} / HR@10 {sr['valid_hr@10']:.4f}; "
                  f"wall {sr['fit_s']:.0f} s, CPU {sr.get('fit_cpu_s', float('nan')):.0f} s "
                  f"(load average at start {res['machine'].get('load_average_at_start')})."]
    if s:
        lines += ["", f"Serving the same encoder ({s['requests']} single-user requests; torch threads "
                      f"{s['torch_threads']}, onnxruntime providers {s['onnx_providers']}):", "",
                  "| runtime | single p50 µs | single p99 µs | batch 256 users/s |", "|---|---:|---:|---:|",
                  f"| onnxruntime | {s['onnx_single']['p50_us']:.0f} | {s['onnx_single']['p99_us']:.0f} | "
                  f"{s['onnx_batch256_users_per_s']:.0f} |",
                  f"| PyTorch eager | {s['torch_single']['p50_us']:.0f} | {s['torch_single']['p99_us']:.0f} | "
                  f"{s['torch_batch256_users_per_s']:.0f} |",
                  f"| `recommend` (onnxruntime + top-10) | {s['recommend_single_onnx']['p50_us']:.0f} | "
                  f"{s['recommend_single_onnx']['p99_us']:.0f} | |",
                  f"| `recommend`, 1 thread everywhere (a web worker) | "
                  f"{s['recommend_single_onnx_1thread']['p50_us']:.0f} | "
                  f"{s['recommend_single_onnx_1thread']['p99_us']:.0f} | |",
                  "", f"onnxruntime / PyTorch: single-request p50 time ratio "
                      f"**{s['single_p50_ratio_onnx_over_torch']:.2f}** (below 1: onnxruntime faster), batch "
                      f"throughput ratio **{s['batch_throughput_ratio_onnx_over_torch']:.2f}** (above 1: faster)."]
    lines += ["", f"Peak resident memory of the whole run: {res['peak_rss_mb']:.0f} MB."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="sequences file (default: the shared Amazon Beauty)")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=None, help="most epochs (default 200; 3 with --quick)")
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--loss", choices=("ce", "sampled"), default="ce")
    ap.add_argument("--lr-schedule", choices=("constant", "plateau"), default="constant")
    ap.add_argument("--contrastive", type=float, default=0.0, help="weight of the contrastive term")
    ap.add_argument("--output-precision", choices=("float32", "bfloat16", "auto"), default="auto")
    ap.add_argument("--negatives", type=int, default=256, help="draws per step with --loss sampled")
    ap.add_argument("--attributes", action="store_true",
                    help="item attributes as side information (<Name>_item2attributes.json beside the data)")
    ap.add_argument("--test-history", choices=("extend", "refit", "default"), default="extend",
                    help="how the test sees the validation item (see the module docstring)")
    ap.add_argument("--threads", type=int, default=0, help="torch / onnxruntime threads (0: their defaults)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-users", type=int, default=None, help="keep a random sample of users")
    ap.add_argument("--requests", type=int, default=1000, help="single-user requests timed per runtime")
    ap.add_argument("--batch-seconds", type=float, default=2.0, help="time spent per batch-throughput measure")
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--progress", action="store_true", help="tqdm bar over epochs")
    ap.add_argument("--quick", action="store_true", help="3000 users, 3 epochs, 200 requests: a smoke test")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    if args.quick:
        args.max_users = args.max_users or 3000
        args.requests = min(args.requests, 200)
        args.batch_seconds = min(args.batch_seconds, 0.5)
    args.epochs = args.epochs or (3 if args.quick else 200)

    res = run(args)
    name = Path(res["data"]).stem
    stem = "sasrec" + ("" if name == "Beauty" else f"-{name}") + ("-quick" if args.quick else "") + \
        ("-default" if args.test_history == "default" else "")
    write_results(args.out, stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
