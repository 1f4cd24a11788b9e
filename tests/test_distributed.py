"""The one patch of Lightning internals: DDP children run the current Hydra job's command."""

import inspect

import pytest
from lightning.pytorch.strategies.launchers import subprocess_script

from ssl_lightning import distributed


def test_lightning_still_builds_children_commands_with_the_hook_we_replace(monkeypatch):
    """Fails on a Lightning upgrade that renames the hook or stops calling it under Hydra."""
    hook = getattr(subprocess_script, distributed.PATCHED_HOOK, None)
    assert callable(hook), f"lightning no longer has subprocess_script.{distributed.PATCHED_HOOK}"
    launcher = inspect.getsource(subprocess_script._SubprocessScriptLauncher)
    assert f"{distributed.PATCHED_HOOK}(" in launcher
    monkeypatch.setattr(subprocess_script, distributed.PATCHED_HOOK, hook)
    distributed.use_job_command()
    assert subprocess_script._hydra_subprocess_cmd is distributed.job_subprocess_cmd


def test_a_lightning_without_the_hook_is_refused_with_a_clear_message(monkeypatch):
    monkeypatch.delattr(subprocess_script, distributed.PATCHED_HOOK)
    with pytest.raises(RuntimeError, match=f"no subprocess_script.{distributed.PATCHED_HOOK}"):
        distributed.use_job_command()
