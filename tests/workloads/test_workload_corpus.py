from optimizers.workloads import corpus


def test_split_is_by_file_deterministic_and_about_90_5_5():
    files = corpus.stdlib_files()
    assert files == sorted(files) and len(files) > 300
    assert not any(f.startswith(("test/", "site-packages/")) or "/test/" in f for f in files)
    splits = {s: corpus.split_files(s) for s in corpus.SPLITS}
    assert sum(map(len, splits.values())) == len(files)
    assert not set(splits["train"]) & (set(splits["validation"]) | set(splits["test"]))
    assert 0.85 < len(splits["train"]) / len(files) < 0.95  # observed 0.89
    assert corpus.split_of("json/decoder.py") == corpus.split_of("json/decoder.py")
