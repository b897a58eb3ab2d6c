"""The installed start-up hook puts `flexo` in lm-eval's model registry, so lm-eval's own command finds it.

Each check runs a fresh interpreter from outside the repository: the hook must come from the installed .pth, not from
pytest's path, and it must cost nothing until lm-eval loads its models.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("lm_eval")  # the `lm-eval` extra: skipped only in an install without it


def fresh_python(code: str, cwd) -> str:
    """Run `code` in a new interpreter of this environment, from `cwd`; returns its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_start_up_hook_registers_flexo_lazily(tmp_path):
    """Loading lm-eval's models registers `flexo` as a placeholder; nothing of flexo's or torch is imported yet."""
    out = fresh_python(
        "import sys, lm_eval.models\n"
        "from lm_eval.api.registry import model_registry\n"
        "print(model_registry._objs['flexo'], 'torch' in sys.modules, 'tasks' in sys.modules)",
        tmp_path,
    )
    assert out == "tasks.evaluation.lm_eval_model:FlexoLM False False"


def test_lm_eval_finds_the_flexo_model_type(tmp_path):
    """lm-eval's own lookup (what `lm_eval --model flexo` does) returns flexo's model class, beside lm-eval's types."""
    out = fresh_python(
        "from lm_eval.api.registry import get_model\nprint(get_model('flexo').__module__, get_model('dummy').__name__)",
        tmp_path,
    )
    assert out == "tasks.evaluation.lm_eval_model DummyLM"
