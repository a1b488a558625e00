"""A server's start-up heap: its garbage freed first, what lives left out of collections."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_start_up_garbage_is_collected_and_the_living_heap_frozen() -> None:
    # A process of its own: a frozen heap is for the rest of the process's life.
    script = textwrap.dedent(
        """
        import gc, weakref
        from teleconsult.heap import freeze_startup_heap

        class Node:
            pass

        kept = Node(); kept.self = kept
        garbage = Node(); garbage.self = garbage
        gone = weakref.ref(garbage)
        del garbage
        frozen = freeze_startup_heap()
        assert gone() is None, "a cycle dropped at start-up was frozen instead of freed"
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects()), "a start-up object is still collected"
        later = Node(); later.self = later
        assert any(o is later for o in gc.get_objects()), "objects made after start-up must be collected"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
