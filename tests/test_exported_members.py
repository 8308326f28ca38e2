import subplans


def test_all_is_sorted_and_complete() -> None:
    assert subplans.__all__ == sorted(subplans.__all__)
    exported = {name for name in dir(subplans) if not name.startswith("_")}
    modules = {
        "cli",
        "config",
        "dispatcher",
        "errors",
        "events",
        "limiter",
        "logging",
        "progress",
        "states",
        "annotations",
        "version",
        "PackageNotFoundError",
    }
    assert exported - modules <= set(subplans.__all__)
    for name in subplans.__all__:
        assert hasattr(subplans, name), name
