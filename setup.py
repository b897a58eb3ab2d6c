"""setuptools reads everything from pyproject.toml; this file only installs `lm_eval_flexo_hook.pth`.

Why: lm-eval reads no entry points, so `lm_eval --model flexo` needs flexo's model type registered by a start-up hook
(`lm_eval_flexo_hook.py` says how). A .pth file is Python's own start-up hook, and it has to sit at the top of
site-packages, where no pyproject setting puts a file: `build_py` copies it there, for a wheel and for an editable
install (whose wheel root is the install command's `install_lib`). Uninstalling removes it with the rest.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "lm_eval_flexo_hook.pth"


class BuildPyWithHook(build_py):
    """build_py, plus the .pth at the top of the wheel."""

    def run(self) -> None:
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(PTH, str(Path(root) / PTH))


setup(cmdclass={"build_py": BuildPyWithHook})
