"""`tenure eval --only`: the sections not run keep their last figures, each dated."""

from __future__ import annotations

import json
from pathlib import Path

from tenure_cli.eval_cmd import keep_earlier


def test_sections_left_out_keep_their_figures_and_their_own_date(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    out.write_text(json.dumps({
        "generated_at": "2026-01-01T00:00:00+00:00", "commit": "old1234",
        "runs": [{"name": "full", "auc": 0.9}, {"name": "purchases", "auc": 0.8,
                                                "commit": "older99", "generated_at": "x"}],
        "uplift": {"playbooks": {}},
    }))
    results = {"generated_at": "2026-02-01T00:00:00+00:00", "commit": "new5678",
               "runs": [{"name": "purchases", "auc": 0.85, "commit": "new5678",
                         "generated_at": "2026-02-01T00:00:00+00:00"}]}
    keep_earlier(results, out, ["full", "purchases", "absent"])
    assert [r["name"] for r in results["runs"]] == ["full", "purchases"]
    full, purchases = results["runs"]
    assert (full["auc"], full["commit"]) == (0.9, "old1234")  # dated by the file it came from
    assert (purchases["auc"], purchases["commit"]) == (0.85, "new5678")  # just run
    assert results["uplift"] == {"generated_at": "2026-01-01T00:00:00+00:00",
                                 "commit": "old1234", "playbooks": {}}


def test_no_earlier_file_keeps_nothing(tmp_path: Path) -> None:
    results = {"runs": [{"name": "full"}]}
    keep_earlier(results, tmp_path / "missing.json", ["full", "purchases"])
    assert results == {"runs": [{"name": "full"}]}
