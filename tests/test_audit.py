"""irp audit: the blind stratified sample, its sealed design, verdict storage and import, the design-based
estimators (against exact population values and by coverage), agreement, the promise translation, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from irp.audit.estimate import (
    StratumData,
    audit_report,
    cohen_kappa,
    krippendorff_alpha,
    plan_half_widths,
    stratified_mean,
    stratified_ratio,
    translate_promise,
)
from irp.audit.sample import SampleError, draw_sample, write_sample
from irp.audit.store import AuditError, AuditFolder
from irp.data.io import write_records


def population(n: int, seed: int = 0) -> list[dict]:
    """Records with a tap label and a latent true_intent (tap precision ~0.9, recall ~0.7)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        visual = int(rng.random() < 0.35)
        label = int(rng.random() < (0.7 if visual else 0.04))
        out.append({"id": f"r{i}", "utterance": f"show me thing {i}", "intent": "search", "context": ["hi"],
                    "products": [{"title": f"item {i}", "color": ["red"], "price": 3.5}], "label": label,
                    "true_intent": visual, "screen_available": True})
    return out


def answer_all(folder: AuditFolder, truth: dict[str, int], annotator: str = "sim", ids: list[str] | None = None) -> None:
    for record in folder.records if ids is None else [{"id": i} for i in ids]:
        folder.record_verdict(annotator, record["id"], "yes" if truth[record["id"]] else "no")


def run_irp(*args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "COLUMNS": "400"}  # rich wraps error messages at the terminal width
    return subprocess.run([sys.executable, "-m", "irp.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)


# ---- sample and design -------------------------------------------------------------------------------------


def test_sample_is_blind_stratified_and_sealed(tmp_path: Path) -> None:
    records = population(500)
    folder = write_sample(records, 60, tmp_path / "a", seed=3)
    assert len(folder.records) == 60 and len({r["id"] for r in folder.records}) == 60
    for r in folder.records:
        assert set(r) == {"id", "utterance", "intent", "context", "products"}  # no label, score or truth
    strata = {s["name"]: s for s in folder.design["strata"]}
    assert set(strata) == {"tap", "no_tap"} and all(s["sampled"] == 30 for s in strata.values())
    assert strata["tap"]["population"] == sum(r["label"] for r in records)
    labels = {r["id"]: r["label"] for r in records}
    assert all(labels[i] == (e["stratum"] == "tap") for i, e in folder.design["records"].items())
    # the queue interleaves the strata (not all taps first)
    kinds = [folder.design["records"][r["id"]]["stratum"] for r in folder.records]
    assert kinds[:30] != ["tap"] * 30 and kinds[:30] != ["no_tap"] * 30
    again = write_sample(records, 60, tmp_path / "b", seed=3)
    assert again.records == folder.records  # the seed fixes the sample


def test_score_bands_split_at_the_threshold(tmp_path: Path) -> None:
    records = population(800, seed=1)
    scores = np.random.default_rng(2).random(800)
    model = {"path": "m", "version": "v", "threshold": 0.7, "promise": {"threshold": 0.7}}
    folder = write_sample(records, 160, tmp_path / "a", scores=scores, model=model)
    strata = folder.design["strata"]
    assert len(strata) == 8 and sum(s["sampled"] for s in strata) == 160
    for s in strata:
        low, high = s["score_range"]
        high = math.inf if high is None else high
        assert s["above_threshold"] == (low >= 0.7)
        members = [i for i, r in enumerate(records) if r["label"] == s["label"] and low <= scores[i] < high]
        assert s["population"] == len(members)
    assert folder.design["model"]["band_edges"][-1] is None  # +inf stored as null (strict JSON)
    for record_id, entry in folder.design["records"].items():  # the score is kept in the design, not the sample
        assert entry["score"] == pytest.approx(scores[int(record_id[1:])])


def test_sample_errors() -> None:
    records = population(20)
    with pytest.raises(SampleError, match="larger than the data"):
        draw_sample(records, 21)
    with pytest.raises(SampleError, match="too small"):
        draw_sample(records, 3)
    unlabeled = [dict(r, label=None) for r in records]
    with pytest.raises(SampleError, match="no 0/1 label"):
        draw_sample(unlabeled, 5)


def test_tampering_is_detected(tmp_path: Path) -> None:
    folder = write_sample(population(200), 40, tmp_path / "a")
    design_path = tmp_path / "a" / "design.json"
    design = json.loads(design_path.read_text())
    design["strata"][0]["population"] += 1
    design_path.write_text(json.dumps(design))
    with pytest.raises(AuditError, match="modified after sampling") as e:
        AuditFolder.open(folder.root)
    assert e.value.field == "design.json"
    folder2 = write_sample(population(200), 40, tmp_path / "b")
    with open(folder2.root / "sample.jsonl", "a") as f:
        f.write("\n")
    with pytest.raises(AuditError, match="sample.jsonl"):
        AuditFolder.open(folder2.root)
    with pytest.raises(AuditError, match="not an audit sample"):
        AuditFolder.open(tmp_path)
    with pytest.raises(AuditError, match="not empty"):
        write_sample(population(200), 40, tmp_path / "b")


# ---- verdicts ----------------------------------------------------------------------------------------------


def test_verdicts_replace_undo_and_import(tmp_path: Path) -> None:
    folder = write_sample(population(200), 20, tmp_path / "a")
    ids = [r["id"] for r in folder.records]
    folder.record_verdict("ann", ids[0], "yes")
    folder.record_verdict("ann", ids[1], "no")
    folder.record_verdict("ann", ids[0], "no")  # answered again: replaced, and now the last given
    assert [(v.id, v.verdict) for v in folder.verdicts("ann")] == [(ids[1], "no"), (ids[0], "no")]
    assert folder.undo("ann").id == ids[0]
    assert [(v.id, v.verdict) for v in folder.verdicts("ann")] == [(ids[1], "no")]
    assert folder.progress("ann")["position"] == 0
    for bad, field in ((("ann", "nope", "yes"), "id"), (("ann", ids[0], "maybe"), "verdict"),
                       (("../x", ids[0], "yes"), "annotator")):
        with pytest.raises(AuditError) as e:
            folder.record_verdict(*bad)
        assert e.value.field == field

    csv_path = tmp_path / "v.csv"
    csv_path.write_text("id,annotator,verdict\n" + "".join(f"{i},sheet,{v}\n" for i, v in
                                                             zip(ids[:4], ["Yes", "n", "can't tell", "1"])))
    summary = folder.import_verdicts(csv_path)
    assert (summary.added, summary.annotators) == (4, ("sheet",))
    assert [v.verdict for v in folder.verdicts("sheet")] == ["yes", "no", "cant_tell", "yes"]
    jsonl = tmp_path / "v.jsonl"
    jsonl.write_text(json.dumps({"id": ids[0], "verdict": "no"}) + "\n")
    before = folder.verdicts("sheet")
    with pytest.raises(AuditError, match="differ"):  # a changed verdict needs --replace
        folder.import_verdicts(jsonl, annotator="sheet")
    assert folder.verdicts("sheet") == before
    assert folder.import_verdicts(jsonl, annotator="sheet", replace=True).replaced == 1
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,annotator,verdict\n{ids[5]},sheet,yes\nunknown-id,sheet,no\n")
    before = folder.verdicts("sheet")
    with pytest.raises(AuditError, match="line 3: unknown record id"):
        folder.import_verdicts(bad)
    assert folder.verdicts("sheet") == before  # all or nothing


# ---- estimators --------------------------------------------------------------------------------------------


def _stratum(name: str, label: int, population_size: int, y: list[float]) -> StratumData:
    return StratumData(name, label, None, population_size, len(y), np.asarray(y, dtype=float), 0, 0)


def test_census_gives_the_population_values_exactly(tmp_path: Path) -> None:
    records = population(300, seed=4)
    folder = write_sample(records, 300, tmp_path / "a")  # every record reviewed: no sampling error left
    answer_all(folder, {r["id"]: r["true_intent"] for r in records})
    report = audit_report(folder)
    t = np.array([r["true_intent"] for r in records])
    y = np.array([r["label"] for r in records])
    assert report["precision"]["estimate"] == pytest.approx(t[y == 1].mean())
    assert report["recall"]["estimate"] == pytest.approx(y[t == 1].mean())
    assert report["precision"]["se"] == pytest.approx(0.0) and report["recall"]["se"] == pytest.approx(0.0)


def test_ratio_variance_matches_the_linearisation_by_hand() -> None:
    taps = _stratum("tap", 1, 100, [1, 1, 0, 1])
    no_taps = _stratum("no_tap", 0, 900, [0, 1, 0, 0, 0])
    r = stratified_ratio([taps], [taps, no_taps])
    a, b = 100 * 0.75, 900 * 0.2
    assert r["estimate"] == pytest.approx(a / (a + b))
    ratio = a / (a + b)
    var = ((100 * (1 - ratio) / (a + b)) ** 2 * taps.var_mean + (900 * (0 - ratio) / (a + b)) ** 2 * no_taps.var_mean)
    assert r["se"] == pytest.approx(math.sqrt(var))
    # the stratum variance is SRSWOR: (1 - n/N) s^2 / n with s^2 the sample variance (here above the floor)
    assert taps.var_mean == pytest.approx((1 - 4 / 100) * np.var([1, 1, 0, 1], ddof=1) / 4)
    everyone_yes = _stratum("tap", 1, 100, [1.0] * 20)
    assert everyone_yes.var_mean > 0  # floored: an all-yes stratum is not certain
    assert stratified_mean([everyone_yes])["ci95"][1] == 1.0 and stratified_mean([everyone_yes])["ci95"][0] < 1.0


def test_intervals_cover_in_repeated_samples() -> None:
    """Coverage of the precision and recall intervals over 300 stratified samples of a fixed population."""
    rng = np.random.default_rng(0)
    n_pop = 5000
    visual = rng.random(n_pop) < 0.35
    tap = np.where(visual, rng.random(n_pop) < 0.75, rng.random(n_pop) < 0.05)
    true_precision, true_recall = visual[tap].mean(), tap[visual].mean()
    hits, widths = np.zeros(2), np.zeros(2)
    for _ in range(300):
        strata = []
        for label in (1, 0):
            members = np.flatnonzero(tap == label)
            picked = rng.choice(members, 100, replace=False)
            strata.append(_stratum("tap" if label else "no_tap", label, members.size, visual[picked].astype(float)))
        p, r = stratified_mean(strata[:1]), stratified_ratio(strata[:1], strata)
        hits += [p["ci95"][0] <= true_precision <= p["ci95"][1], r["ci95"][0] <= true_recall <= r["ci95"][1]]
        widths += [(p["ci95"][1] - p["ci95"][0]) / 2, (r["ci95"][1] - r["ci95"][0]) / 2]
    coverage = hits / 300
    assert (coverage >= 0.9).all(), coverage
    # the planning formula of docs/audit.md predicts the half-widths
    plan = plan_half_widths(200, tap.mean(), true_precision, visual[~tap].mean(), population=n_pop)
    assert widths / 300 == pytest.approx([plan["precision"], plan["recall"]], rel=0.15)


def test_cant_tell_is_reported_and_bounded(tmp_path: Path) -> None:
    records = population(300, seed=6)
    truth = {r["id"]: r["true_intent"] for r in records}
    folder = write_sample(records, 80, tmp_path / "a", seed=2)
    for i, record in enumerate(folder.records):
        folder.record_verdict("a", record["id"], "cant_tell" if i % 10 == 0 else ("yes" if truth[record["id"]] else "no"))
    report = audit_report(folder)
    assert report["sample"]["verdicts_by_value"]["cant_tell"] == 8
    assert sum(s["cant_tell"] for s in report["strata"]) == 8
    sens = report["cant_tell_sensitivity"]
    assert sens["as_no"]["precision"] <= report["precision"]["estimate"] <= sens["as_yes"]["precision"]


def test_agreement_measures() -> None:
    a = ["yes", "yes", "no", "no", "yes", "no", "yes", "no"]
    b = ["yes", "no", "no", "no", "yes", "yes", "yes", "no"]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert krippendorff_alpha([[x, x] for x in a]) == pytest.approx(1.0)
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", binary example with 2 coders: 0.095
    coder_a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    coder_b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha([[str(x), str(y)] for x, y in zip(coder_a, coder_b)]) == pytest.approx(0.095, abs=5e-4)


def test_promise_translation() -> None:
    tap_above = StratumData("t", 1, True, 400, 50, np.array([1.0] * 45 + [0.0] * 5), 0, 0)
    no_tap_above = StratumData("n", 0, True, 100, 50, np.array([1.0] * 20 + [0.0] * 30), 0, 0)
    below = StratumData("b", 0, False, 5000, 50, np.array([1.0] * 5 + [0.0] * 45), 0, 0)
    promise = {"threshold": 0.6, "lower_bound": 0.75, "confidence": 0.9, "target_precision": 0.7}
    out = translate_promise([tap_above, no_tap_above, below], promise)
    assert out["translated"]["estimate"] == pytest.approx(0.75 * 0.9 + 0.25 * 0.4)
    assert out["tap_precision_in_audited_log"] == pytest.approx(0.8)
    assert out["visual_precision_in_audited_log"]["estimate"] == pytest.approx((400 * 0.9 + 100 * 0.4) / 500)
    a_lo, b_lo = out["visual_given_tap_above"]["ci95"][0], out["visual_given_no_tap_above"]["ci95"][0]
    assert out["certified_visual_precision_lower_bound"] == pytest.approx(min(0.75 * a_lo + 0.25 * b_lo, a_lo))
    assert out["certified_visual_confidence"] == pytest.approx(0.85)


# ---- the CLI -----------------------------------------------------------------------------------------------


def test_cli_sample_import_report_and_bad_input(tmp_path: Path) -> None:
    records = population(400, seed=8)
    data = tmp_path / "log.jsonl"
    write_records(data, records)
    out = tmp_path / "audit"
    assert run_irp("audit", "sample", "--data", str(data), "--n", "401", "--out", str(out)).returncode == 2
    assert not out.exists()
    done = run_irp("audit", "sample", "--data", str(data), "--n", "80", "--out", str(out), "--seed", "1")
    assert done.returncode == 0, done.stderr
    sample = [json.loads(line) for line in (out / "sample.jsonl").read_text().splitlines()]
    truth = {r["id"]: r["true_intent"] for r in records}
    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text("id,annotator,verdict\n" + "".join(
        f"{r['id']},nlu,{'yes' if truth[r['id']] else 'no'}\n" for r in sample))
    imported = run_irp("audit", "import", str(out), "--verdicts", str(verdicts))
    assert imported.returncode == 0, imported.stderr
    stored = (out / "verdicts" / "nlu.jsonl").read_text()

    bad = tmp_path / "bad.csv"
    bad.write_text("id,annotator,verdict\nnot-in-sample,nlu,yes\n")
    result = run_irp("audit", "import", str(out), "--verdicts", str(bad))
    assert result.returncode == 2 and "unknown record id" in result.stderr
    assert (out / "verdicts" / "nlu.jsonl").read_text() == stored  # nothing stored is lost
    result = run_irp("audit", "report", str(tmp_path))
    assert result.returncode == 2 and "not an audit sample" in result.stderr

    report_path, plots = tmp_path / "report.json", tmp_path / "plots"
    result = run_irp("audit", "report", str(out), "--json", str(report_path), "--plots", str(plots))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["sample"]["reviewed_records"] == 80 and report["precision"]["ci95"][0] < report["precision"]["ci95"][1]
    assert (plots / "audit_verdicts_by_band.png").stat().st_size > 10_000

    design = json.loads((out / "design.json").read_text())
    design["strata"][0]["sampled"] -= 1
    (out / "design.json").write_text(json.dumps(design, indent=2))
    result = run_irp("audit", "report", str(out))
    assert result.returncode == 2 and "modified after sampling" in result.stderr
    assert (out / "verdicts" / "nlu.jsonl").read_text() == stored


def test_cli_with_a_model_translates_the_promise(tiny_backbone: str, small_log: dict[str, Path], tmp_path: Path) -> None:
    """`--model` end to end on a tiny trained artifact: score strata at its threshold, the promise translated."""
    model = tmp_path / "model"
    trained = run_irp("train", "--train", str(small_log["train"]), "--valid", str(small_log["valid"]), "--out",
                      str(model), "--backbone", tiny_backbone, "--epochs", "1", "--batch-size", "32", "--lr", "3e-3",
                      "--device", "cpu", "--target-precision", "0.6")
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "audit"
    done = run_irp("audit", "sample", "--data", str(small_log["test"]), "--n", "80", "--out", str(out), "--model",
                   str(model))
    assert done.returncode == 0, done.stderr
    design = json.loads((out / "design.json").read_text())
    threshold = json.loads((model / "config.json").read_text())["threshold"]["value"]
    assert design["model"]["threshold"] == pytest.approx(threshold) and len(design["strata"]) >= 4
    assert any(s["above_threshold"] for s in design["strata"]) and not all(s["above_threshold"] for s in design["strata"])
    labels = {r["id"]: r["label"] for r in (json.loads(line) for line in small_log["test"].read_text().splitlines())}
    sample = [json.loads(line) for line in (out / "sample.jsonl").read_text().splitlines()]
    verdicts = tmp_path / "v.jsonl"  # a reviewer who agrees with the tap 90 % of the time
    verdicts.write_text("".join(json.dumps({"id": r["id"], "annotator": "rev", "verdict": "yes" if (
        labels[r["id"]] if i % 10 else 1 - labels[r["id"]]) else "no"}) + "\n" for i, r in enumerate(sample)))
    assert run_irp("audit", "import", str(out), "--verdicts", str(verdicts)).returncode == 0
    report_path, plots = tmp_path / "r.json", tmp_path / "plots"
    result = run_irp("audit", "report", str(out), "--model", str(model), "--json", str(report_path), "--plots",
                     str(plots))
    assert result.returncode == 0, result.stderr
    promise = json.loads(report_path.read_text())["promise"]
    assert promise["available"] and promise["threshold"] == pytest.approx(threshold)
    lo, hi = promise["translated"]["ci95"]
    assert lo <= promise["translated"]["estimate"] <= hi
    assert (plots / "audit_promise.png").stat().st_size > 10_000
    no_model = tmp_path / "plain"
    assert run_irp("audit", "sample", "--data", str(small_log["test"]), "--n", "20", "--out", str(no_model)).returncode == 0
    refused = run_irp("audit", "report", str(no_model), "--model", str(model))
    assert refused.returncode == 2 and "--model" in refused.stderr


def test_server_checks_host_and_token(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    from irp.audit.web import make_server, serve_in_thread

    folder = write_sample(population(100), 10, tmp_path / "a")

    def status(port: int, path: str, headers: dict[str, str]) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with pytest.raises(AuditError) as e:
        make_server(folder, "0.0.0.0", 0)  # not loopback and no token
    assert e.value.field == "--token"
    loopback = make_server(folder, "127.0.0.1", 0)
    serve_in_thread(loopback)
    anywhere = make_server(folder, "0.0.0.0", 0, token="s3cret")
    serve_in_thread(anywhere)
    try:
        port = loopback.server_address[1]
        assert status(port, "/api/state?annotator=a", {})[0] == 200
        code, body = status(port, "/api/state?annotator=a", {"Host": "attacker.example:80"})
        assert code == 403 and body["field"] == "Host"  # DNS rebinding is refused
        code, body = status(port, "/api/state?annotator=../etc", {})
        assert code == 422 and body["field"] == "annotator"
        port = anywhere.server_address[1]
        code, body = status(port, "/api/state?annotator=a", {})
        assert code == 401 and body["field"] == "token"
        assert status(port, "/api/state?annotator=a", {"X-Audit-Token": "s3cret"})[0] == 200
        assert status(port, "/api/state?annotator=a&token=s3cret", {})[0] == 200
    finally:
        for server in (loopback, anywhere):
            server.shutdown()
            server.server_close()


def test_overlap_splits_the_work(tmp_path: Path) -> None:
    folder = write_sample(population(200), 20, tmp_path / "a")
    ids = [r["id"] for r in folder.records]
    assert folder.progress("b")["queue_size"] == 20  # default: everyone reviews everything
    for record_id in ids[:8]:  # A answers the shared part (first 5) and three more
        folder.record_verdict("a", record_id, "yes")
    state = folder.progress("b", overlap=0.25)
    assert state["position"] == 0 and state["queue_size"] == 5 + 12  # shared 5, then only what nobody answered
    for record_id in ids[:5]:
        folder.record_verdict("b", record_id, "no")
    assert folder.progress("b", overlap=0.25)["position"] == 8  # skips the three A did beyond the shared part
    assert folder.progress("a", overlap=0.25)["position"] == 8
    assert folder.progress("a")["position"] == 8 and folder.progress("b")["position"] == 5


def test_a_damaged_verdict_file_is_named(tmp_path: Path) -> None:
    folder = write_sample(population(100), 10, tmp_path / "a")
    folder.record_verdict("ann", folder.records[0]["id"], "yes")
    with open(tmp_path / "a" / "verdicts" / "ann.jsonl", "a") as f:
        f.write('{"id": "half a line\n')
    with pytest.raises(AuditError, match="line 2 is damaged") as e:
        folder.verdicts("ann")
    assert e.value.field == "verdicts/ann.jsonl"
    result = run_irp("audit", "report", str(tmp_path / "a"))
    assert result.returncode == 2 and "damaged" in result.stderr
