"""The add-on's side of the worker: cancelling, a killed worker, and choosing how to start it."""

from __future__ import annotations

import os
import signal
import sys
import threading

import addon_support as support
import bpy
from addon_support import plumbing_scene, style  # noqa: F401 - fixtures
import pytest

from neural_style_addon import api, preferences, runner, tasks, worker_client
from neural_style_addon.worker_client import WorkerClient, WorkerConfig, WorkerError


@pytest.fixture()
def scene(plumbing_scene):
    return plumbing_scene


def start_long_task(scene) -> runner.Task:
    job = api.build_job(scene, options={"iterations": 5000})
    return api.start(job, tasks.stylize_image_steps)


def step_until_running(task: runner.Task) -> None:
    """Advance until the worker has reported progress, so the job is really running."""
    while "iteration" not in task.status.text:
        assert task.step(), task.error


def test_cancel_stops_the_job_and_leaves_no_half_made_image(scene):
    names = support.image_names()
    task = start_long_task(scene)
    step_until_running(task)
    assert task.image is not None and task.image.name in support.image_names()  # the live preview
    task.cancel()
    with pytest.raises(runner.TaskCancelled):
        task.run()
    assert support.image_names() == names
    assert task.client.alive, "cancel stops the job, not the worker (test_worker.py runs the next job)"


def test_cancel_before_the_request_is_sent_still_cancels(scene):
    task = start_long_task(scene)
    task.cancel()
    with pytest.raises(runner.TaskCancelled):
        task.run()


def test_worker_that_ignores_cancel_is_stopped_after_a_grace_period(scene, monkeypatch):
    monkeypatch.setattr(runner, "CANCEL_GRACE", 0.5)
    names = support.image_names()
    task = start_long_task(scene)
    step_until_running(task)
    os.kill(task.client.process.pid, signal.SIGSTOP)  # a worker busy in something that never checks the flag
    task.cancel()
    with pytest.raises(runner.TaskCancelled):
        task.run()
    assert not task.client.alive and support.image_names() == names


def test_killed_worker_is_a_clear_error_and_blender_carries_on(scene):
    names = support.image_names()
    task = start_long_task(scene)
    step_until_running(task)
    os.kill(task.client.process.pid, signal.SIGKILL)
    with pytest.raises(api.StyleError, match=r"the style engine stopped unexpectedly \(exit code -9\)"):
        task.run()
    assert support.image_names() == names
    assert isinstance(api.stylize_image(), bpy.types.Image)  # a fresh worker takes over


def test_operator_reports_a_worker_killed_mid_run(scene):
    names = support.image_names()
    scene.neural_style.iterations = 5000
    scene.neural_style.preview_every = 1
    client = worker_client.shared_worker(preferences.worker_config())
    # Kill the worker once it has started the job (its first preview file appears).
    killer = threading.Thread(target=_kill_after_first_event, args=(client,), daemon=True)
    killer.start()
    with pytest.raises(RuntimeError, match=r"Neural Style: the style engine stopped unexpectedly"):
        bpy.ops.image.neural_style_apply()
    killer.join(timeout=60)
    assert support.image_names() == names


def _kill_after_first_event(client: WorkerClient) -> None:
    event = client.events.get(timeout=120)  # the first progress event; the job is running
    client.events.put(event)
    os.kill(client.process.pid, signal.SIGKILL)


def test_worker_that_cannot_start_is_reported(tmp_path):
    """An engine whose dependencies are missing: the worker dies at import, the user reads why."""
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    client = WorkerClient(WorkerConfig(sys.executable, (str(tmp_path),), offline=True))
    with pytest.raises(WorkerError, match=r"stopped unexpectedly \(exit code 1\): ImportError: No module named 'torch'"):
        client.wait_ready()


def test_missing_configured_python_is_reported():
    with pytest.raises(WorkerError, match="does not exist: /nonexistent/python"):
        worker_client.choose_python("/nonexistent/python", ())


def test_default_python_is_blenders_own_when_it_has_torch():
    config = preferences.worker_config()
    assert config.python == sys.executable
    assert config.paths == (preferences.EXTENSION_ROOT, preferences.site_packages())
    assert os.path.isdir(os.path.join(config.paths[0], "engine"))


def test_offline_unless_blender_allows_online_access():
    assert bpy.app.online_access is False  # the bpy module's default
    env = preferences.worker_config().env()
    assert env["NEURAL_STYLE_OFFLINE"] == "1"
    online = WorkerConfig(sys.executable, ("/x",), offline=False, cache_dir="/cache").env()
    assert "NEURAL_STYLE_OFFLINE" not in online and online["NEURAL_STYLE_CACHE"] == "/cache"
    assert online["PYTHONPATH"].split(os.pathsep)[0] == "/x"


def test_install_command_targets_a_staging_folder_beside_the_user_folder():
    command = preferences.install_command()
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert command[command.index("--target") + 1] == preferences.site_packages() + ".partial"


def test_installer_installs_the_lock_of_this_machines_package_set():
    """The lock is the engine's one requirement list resolved for this platform (tests/test_locks.py); pip installs
    exactly its packages, binary wheels only, and takes torch's build from the PyTorch index where the set says."""
    chosen = preferences.package_choice().package_set
    command = preferences.install_command()
    assert command[command.index("-r") + 1] == os.path.join(preferences.EXTENSION_ROOT, "engine", "locks",
                                                            f"{chosen.name}.txt")
    assert "--no-deps" in command and command[command.index("--only-binary") + 1] == ":all:"
    assert ("--extra-index-url" in command) == bool(chosen.torch_build)


def test_status_lines_come_from_the_structured_progress_fields():
    train = {"event": "progress", "kind": "train", "iteration": 3, "total": 10, "losses": {"total": None},
             "stage": "ignored"}
    assert runner.progress_text(train) == "training step 3 of 10"
    tiled = {"event": "progress", "kind": "optimize", "iteration": 4, "total": 20, "scale": 2, "scales": 3, "tile": 1,
             "tiles": 4, "losses": {"total": 1.5}, "stage": "ignored"}
    assert runner.progress_text(tiled) == "iteration 4/20, scale 2/3, tile 1/4, loss 1.5"
    stopped = {"event": "progress", "kind": "optimize", "iteration": 200, "total": 200, "saved": 120, "elapsed": 40.0,
               "losses": {"total": 0.9}, "stage": "ignored"}  # the convergence stop ended the run after 80 iterations
    assert runner.progress_text(stopped) == "iteration 200/200, loss 0.9, 120 iterations (~60 s) saved"
