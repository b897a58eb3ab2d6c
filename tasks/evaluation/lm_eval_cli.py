"""`flexo-lm-eval`: lm-evaluation-harness's own command line, with flexo's defaults and one subcommand of its own.

lm-eval's own `lm_eval --model flexo ...` finds the `flexo` model type by itself (`lm_eval_flexo_hook`, installed with
flexo, registers it when lm-eval loads its models). This entry point is that command with `--batch_size` defaulting to
`auto` (the profile's eval.batch_size; lm-eval's default is 1), the model type registered even where the hook is not
installed, and the hub off before lm-eval loads `datasets` (importing `tasks` forces HF_HUB_OFFLINE/HF_DATASETS_OFFLINE,
see `tasks.core.environment`). Its subcommand writes the FLEXMIX task folder:

  flexo-lm-eval write-tasks --profile demo   # runs/demo/eval/tasks/*.jsonl + *.yaml, as evaluate writes them
  flexo-lm-eval --model flexo --model_args profile=demo,model=moe,exclude=code \\
      --tasks flexmix --include_path runs/demo/eval/tasks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

INSTALL = '.venv/bin/uv pip install --python .venv/bin/python -c requirements.lock -e ".[lm-eval]"'


def task_folder(profile_name: str | None, params: str | None = None) -> Path:
    """Write the profile's FLEXMIX tasks (JSONL + lm-eval configs) where `evaluate` writes them; returns the folder."""
    from tasks.core.artifacts import RunPaths
    from tasks.core.config import load_profile
    from tasks.evaluation.inputs import held_out_split_paths, load_test_frames
    from tasks.evaluation.mixed import build_mixed, with_mixed
    from tasks.evaluation.tasks import build_tasks, write_lm_eval_files

    profile = load_profile(profile_name, params)
    frames = load_test_frames(profile)
    tasks = build_tasks(frames, profile.eval, profile.seed, held_out_split_paths(profile))
    folder = RunPaths(profile).eval_dir / "tasks"
    write_lm_eval_files(with_mixed(tasks, build_mixed(frames, profile.eval, profile.seed)), folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["write-tasks"]:
        parser = argparse.ArgumentParser(prog="flexo-lm-eval write-tasks")
        parser.add_argument("--profile", default=None, help="params.yaml profile (default: $FLEXO_PROFILE)")
        parser.add_argument("--params", default=None, help="params.yaml path (default: ./params.yaml)")
        options = parser.parse_args(args[1:])
        print(task_folder(options.profile, options.params))
        return
    try:
        from lm_eval.__main__ import cli_evaluate
    except ModuleNotFoundError as exc:
        raise SystemExit(f"{exc.name} is not installed; install the extra: {INSTALL}") from exc
    import tasks.evaluation.lm_eval_model  # noqa: F401  registers `--model flexo` (the start-up hook may be absent)

    if not any(a in ("--batch_size", "-b") or a.startswith("--batch_size=") for a in args):
        args = [*args, "--batch_size", "auto"]  # flexo's model reads `auto` as the profile's eval.batch_size
    sys.argv = ["lm-eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
