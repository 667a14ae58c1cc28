"""RemapBackend reads its rule file again when it starts."""
from txfbtftp import MemoryBackend
from txfbtftp._backends.remap import RemapBackend, load_rules


def test_start_reads_the_rule_file_again_and_keeps_the_old_rules_if_it_is_now_bad(tmp_path):
    """A process started after a reload (a restarted worker) must serve the
    file as it is now; one that no longer parses changes nothing, as on SIGHUP."""
    rules = tmp_path / "rules"
    rules.write_text("r ^a b\n")
    backend = RemapBackend(MemoryBackend(), load_rules(str(rules)), str(rules))
    rules.write_text("r ^a c\nr ^c d\n")
    backend.start()
    assert [r.replacement for r in backend.rules] == ["c", "d"]
    rules.write_text("z ^a b\n")
    backend.start()
    assert [r.replacement for r in backend.rules] == ["c", "d"]
