import json

import pytest

from conftest import MT_BENCH
from spsamp.config import ConfigError, DatasetConfig
from spsamp.data import MT_BENCH_CATEGORIES, load_prompts


def test_builtin_covers_every_mt_bench_category():
    prompts = load_prompts(DatasetConfig(turns="both"))
    assert len(prompts) >= 16 and len({p.id for p in prompts}) == len(prompts)
    assert {p.category for p in prompts} == set(MT_BENCH_CATEGORIES)
    assert all(len(p.turns) == 2 for p in prompts)
    assert all(len(p.turns) == 1 for p in load_prompts(DatasetConfig()))


def test_selection_by_category_and_count():
    prompts = load_prompts(DatasetConfig(categories=["coding", "math"], max_samples=3))
    assert [p.category for p in prompts] == ["math", "math", "coding"]
    with pytest.raises(ConfigError, match=r"dataset.categories: \['poetry'\] not in this dataset"):
        load_prompts(DatasetConfig(categories=["poetry"]))


@pytest.mark.skipif(not MT_BENCH.exists(), reason="shared MT-Bench file not present")
def test_real_mt_bench_file():
    prompts = load_prompts(DatasetConfig(name="mt_bench", path=str(MT_BENCH), turns="both"))
    assert len(prompts) == 80 and {p.category for p in prompts} == set(MT_BENCH_CATEGORIES)
    assert prompts[0].id == "81" and len(prompts[0].turns) == 2
    coding = load_prompts(DatasetConfig(name="mt_bench", path=str(MT_BENCH), categories=["coding"]))
    assert len(coding) == 10 and all(len(p.turns) == 1 for p in coding)


def test_json_array_format_and_record_errors(tmp_path):
    arr = tmp_path / "q.json"
    arr.write_text(json.dumps([{"question_id": 7, "category": "math", "turns": ["1+1?", "and 2+2?"]}]))
    assert load_prompts(DatasetConfig(name="mine", path=str(arr)))[0].turns == ("1+1?",)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["ok"]}\n\n{"question_id": 2, "turns": "not a list"}\n')
    with pytest.raises(ConfigError, match=rf"^{bad}:3: 'turns' must be a non-empty list"):
        load_prompts(DatasetConfig(name="mine", path=str(bad)))
    with pytest.raises(ConfigError, match="dataset.path: .* does not exist"):
        load_prompts(DatasetConfig(name="mine", path=str(tmp_path / "missing.jsonl")))
