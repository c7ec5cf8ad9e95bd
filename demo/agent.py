"""The agent in the demo: an agent-finetuned model's policy chooses the actions of a session.

With a dynamics checkpoint that has agent heads (a behaviour-cloning run: `python -m
dreamer4_torch.train bc`, e.g. runs/agent/agent), the page's "agent drives" switch hands the
actions to the policy head (the mean of its distance-1 distribution, as `python -m
dreamer4_torch.eval policy` plays by default):

  * in the world model: the policy sees the frames the model imagines (clean context latents, the
    task's embedding in the agent token, the last `context` frames) and its action makes the next
    imagined frame; the reward head's prediction is summed as the imagined return;
  * beside it, where MuJoCo is installed: the same policy plays the real task from the real
    environment's frames (rendered as the data set's, encoded by the tokenizer), and the world
    model starts from that environment's first frame, so the two can be compared as they drift
    apart. The real return is the environment's.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def mujoco_available() -> Optional[str]:
    """None when the real tasks can be built here, else the reason they cannot."""
    import importlib.util
    missing = [name for name in ("mujoco", "dm_control") if importlib.util.find_spec(name) is None]
    if missing:       # found, not imported: the rendering backend is chosen when the task is built
        return (f"{' and '.join(missing)} not installed: install the data extra "
                f"(pip install -e '.[data]') to see the real task beside the world model")
    return None


class RealEpisode:
    """One real DMControl episode played by the policy: frames encoded as the tokenizer was trained
    (clips of its clip length), the policy's window over the encoded frames.

    The environment lives on a thread of its own: an EGL rendering context is current on the thread
    that created it, and the server calls a session from whichever worker thread serves the request
    (rendering from another thread fails with EGL_BAD_ACCESS)."""

    def __init__(self, model, task: str, seed: int, context: int, size: int, render: dict):
        from concurrent.futures import ThreadPoolExecutor

        from shared.data.tasks import TASK_IDS, get_task, make_env
        self.model, self.task, self.seed = model, task, int(seed)
        self.action_dim = get_task(task).action_dim
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"d4-real-{task}")
        try:
            self.env = self._on_thread(make_env, task, seed=0, size=size, **render)
            self.frame = self._on_thread(self.env.reset, int(seed))            # (3, H, W) uint8
        except BaseException:
            if hasattr(self, "env"):
                self._thread.submit(self.env.close)
            self._thread.shutdown(wait=False)
            raise
        self.runner = model.policy_runner(TASK_IDS[task], context)
        self.clip: list[np.ndarray] = []
        self.chunk = max(1, int(model.tokenizer_clip_frames or 1))
        self.packed = self._encode(self.frame)
        self.action = model.policy_observe(self.runner, self.packed, None)
        self.total, self.steps = 0.0, 0

    def _encode(self, frame: np.ndarray):
        if len(self.clip) == self.chunk:
            self.clip = []
        self.clip.append(frame)
        return self.model.encode(np.stack(self.clip))[:, -1:]           # (1, 1, S, D)

    def step(self) -> None:
        frame, reward = self._on_thread(self.env.step, np.asarray(self.action[:self.action_dim], np.float64))
        self.total += float(reward)
        self.steps += 1
        self.frame = frame
        previous = self.action
        self.action = self.model.policy_observe(self.runner, self._encode(frame), previous)

    def image(self) -> np.ndarray:
        return self.frame.transpose(1, 2, 0)

    def _on_thread(self, fn, *args, **kwargs):
        return self._thread.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        try:
            self._on_thread(self.env.close)
        finally:
            self._thread.shutdown(wait=True)


class AgentDriver:
    """The policy's side of one session: its window over the imagined frames, the imagined return and,
    where MuJoCo is installed, a real episode beside it."""

    def __init__(self, model, task: str, context: int, real: bool, size: int, render: dict):
        from shared.data.tasks import TASK_IDS
        self.model, self.task, self.context = model, task, int(context)
        self.task_id = TASK_IDS[task]
        self.real_wanted, self.size, self.render = real, size, render
        self.real: Optional[RealEpisode] = None
        self.runner = None
        self.action: Optional[np.ndarray] = None
        self.imagined_return = 0.0

    def start_real(self, seed: int) -> np.ndarray:
        """Reset the real episode; returns its first frame (3, H, W) uint8, the imagination's start."""
        self.close()
        self.real = RealEpisode(self.model, self.task, seed, self.context, self.size, self.render)
        return self.real.frame

    def start(self, packed, actions: np.ndarray) -> None:
        """The imagination's start: packed context latents (1, T, S, D) and the actions that made them."""
        self.runner = self.model.policy_runner(self.task_id, self.context)
        self.imagined_return = 0.0
        action = None
        for t in range(packed.shape[1]):
            action = self.model.policy_observe(self.runner, packed[:, t:t + 1], None if t == 0 else actions[t])
        self.action = action
        self.reward = self.model.policy_reward(self.runner)

    def observe(self, packed, action: np.ndarray) -> None:
        """The imagined frame (1, 1, S, D) that `action` made: the next action and predicted reward."""
        self.imagined_return += self.reward
        self.action = self.model.policy_observe(self.runner, packed, action)
        self.reward = self.model.policy_reward(self.runner)
        if self.real is not None:
            self.real.step()

    def close(self) -> None:
        if self.real is not None:
            self.real.close()
            self.real = None
