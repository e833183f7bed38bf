"""The README's Python examples run as written (from the repository root, on the bundled Cranfield) and print what
the README says."""
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def readme_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_python_examples(capsys, monkeypatch):
    blocks = readme_blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(ROOT)
    scope = {}
    exec(compile(blocks[0], "README.md python block 1", "exec"), scope)
    assert f"{float(capsys.readouterr().out):.4f}" == "0.2714"  # the value the README shows
    assert len(scope["ids"]) == 5 and all(int(i) % 2 == 0 for i in scope["ids"])
    # block 2: the index directory from Python
    exec(compile(blocks[1], "README.md python block 2", "exec"), scope)
    reader, removed = scope["reader"], int(scope["ids"][0])
    assert scope["report"]["documents"] == 1400 and reader.segments == 1 and reader.storage == "residual:2"
    assert len(reader) == 1399 and not reader.is_live(removed) and reader.name(1) == scope["docs"]["ids"][1]
    assert removed not in reader.search(scope["qs"][0], top=10).ids
    assert scope["page"].startswith("<!DOCTYPE html>") and "query 1" in scope["page"]
    import shutil
    shutil.rmtree(scope["folder"])
    pytest.importorskip("distributed")
    try:
        exec(compile(blocks[2], "README.md python block 3", "exec"), scope)
        assert len(scope["hits"]) == len(scope["qs"])
        for h, res in zip(scope["hits"], scope["results"]):
            assert list(h.ids) == list(res.ids)
    finally:
        if "client" in scope:
            scope["client"].close()
            scope["client"].cluster.close()
