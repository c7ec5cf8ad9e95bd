"""The Gradio app: an interactive world model (play it with the keyboard or sliders) and an
open-loop view (a held-out episode beside the model's rollout under the same actions).

Every browser tab (and every gradio_client) is its own session, keyed by Gradio's session hash:
its own stream, KV cache, actions and measurements (demo.session.Session). The model is shared and
serialised by one lock. Play mode is a streaming generator that runs until paused; the keyboard is
handled by a small script in the page head that clicks hidden buttons.
"""

import collections
import functools
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .session import SMOOTHING, Session, checked_number, comparison_grid, open_loop, side_by_side_gif

MAX_CONTEXT = 64          # the context slider's range (frames kept per session)
MAX_SLIDERS = 16

CSS = """
#d4-frame img, #d4-gif img, #d4-grid img { image-rendering: pixelated; image-rendering: crisp-edges; }
#d4-frame img { width: 100%; height: 100%; object-fit: contain; }
#d4-status { min-height: 4.5em; }
.d4-keys kbd { border: 1px solid #999; border-bottom-width: 2px; border-radius: 4px; padding: 0 5px; }
"""

# Arrow keys choose (left/right) and push (up/down, while held) an action dimension; space plays or
# pauses; R resets. Keys typed into text fields are left alone.
HEAD = """
<script>
(() => {
  const held = new Set();
  const click = (id) => { const el = document.getElementById(id); if (el) el.click(); };
  const typing = (t) => t && (t.isContentEditable || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' ||
      (t.tagName === 'INPUT' && !['range', 'checkbox', 'radio', 'button'].includes(t.type)));
  const press = { ArrowUp: 'd4-key-up-press', ArrowDown: 'd4-key-down-press' };
  const release = { ArrowUp: 'd4-key-up-release', ArrowDown: 'd4-key-down-release' };
  window.addEventListener('keydown', (e) => {
    if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k in press) { if (!held.has(k)) { held.add(k); click(press[k]); } }
    else if (k === 'ArrowLeft' || k === 'ArrowRight') { if (!e.repeat) click(k === 'ArrowLeft' ? 'd4-key-left' : 'd4-key-right'); }
    else if (k === ' ') {
      if (!e.repeat) { const pause = document.getElementById('d4-pause'); (pause && !pause.disabled) ? pause.click() : click('d4-play'); }
    }
    else if (k === 'r' || k === 'R') { if (!e.repeat) click('d4-reset'); }
    else return;
    e.preventDefault();
    e.stopPropagation();
  }, { capture: true });
  window.addEventListener('keyup', (e) => {
    if (held.has(e.key)) { held.delete(e.key); click(release[e.key]); e.preventDefault(); }
  }, { capture: true });
  window.addEventListener('blur', () => { for (const k of held) click(release[k]); held.clear(); });
})();
</script>
"""

KEYS_HELP = ("<div class='d4-keys'><kbd>←</kbd>/<kbd>→</kbd> choose an action dimension · "
             "<kbd>↑</kbd>/<kbd>↓</kbd> push it to +1 / −1 while held · <kbd>Space</kbd> play / pause · "
             "<kbd>R</kbd> reset. Actions are smoothed (a ← 0.817·a + 0.183·a<sub>new</sub>).</div>")


@dataclass
class AppOptions:
    task: Optional[str] = None
    n_steps: int = 2
    context_length: int = 16
    smoothing: float = SMOOTHING
    start_frames: int = 1
    max_fps: float = 20.0
    seed: int = 0
    session_capacity: int = 32


class Sessions:
    """Session objects keyed by Gradio's session hash (one per browser tab or API client)."""

    def __init__(self, model, source, options: AppOptions):
        self.model, self.source, self.options = model, source, options
        self.sessions: "collections.OrderedDict[str, Session]" = collections.OrderedDict()
        self.lock = threading.Lock()
        self.created = 0

    def get(self, request) -> Session:
        key = getattr(request, "session_hash", None)
        if not key:
            raise RuntimeError("a demo event arrived without a Gradio session")
        with self.lock:
            session = self.sessions.get(key)
            if session is not None:
                self.sessions.move_to_end(key)
                return session
            self.created += 1
            seed = self.options.seed + self.created
        o = self.options
        session = Session(self.model, self.source, task=o.task, n_steps=o.n_steps, context_length=o.context_length,
                          history_limit=MAX_CONTEXT, smoothing=o.smoothing, start_frames=o.start_frames, seed=seed)
        with self.lock:
            session = self.sessions.setdefault(key, session)
            evicted = []
            while len(self.sessions) > o.session_capacity:
                evicted.append(self.sessions.popitem(last=False)[1])
        for old in evicted:
            old.close()
        return session

    def close(self, request) -> None:
        key = getattr(request, "session_hash", None)
        with self.lock:
            session = self.sessions.pop(key, None)
        if session is not None:
            session.close()


def build_app(model, source, options: Optional[AppOptions] = None, title: str = "Dreamer 4 world model"):
    import gradio as gr
    import pandas as pd

    options = options or AppOptions()
    sessions = Sessions(model, source, options)
    steps_choices = [str(k) for k in model.steps_choices]
    n_sliders = min(MAX_SLIDERS, model.action_dim)
    gif_dir = tempfile.mkdtemp(prefix="dreamer4-demo-")

    def slider_updates(session: Session):
        dims = session.action_dim
        return [gr.update(visible=d < dims, value=float(session.sliders[d]),
                          label=f"action {d + 1}" + (" (selected)" if d == session.selected_dim else ""))
                for d in range(n_sliders)]

    def refusing(handler):
        """A bad value from a client (ValueError from the session's checks) becomes an error message in the
        page or the API's reply, naming the value; the session is left as it was."""
        @functools.wraps(handler)
        def wrapped(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except ValueError as e:
                raise gr.Error(str(e)) from None
        return wrapped

    def buttons(playing: bool):
        return gr.update(interactive=not playing), gr.update(interactive=playing)

    # ------------------------------------------------------------------ interactive handlers

    def on_load(request: gr.Request):
        s = sessions.get(request)
        return (s.display(), s.status(), gr.update(value=s.task), gr.update(value=str(s.n_steps)),
                gr.update(value=s.context_length), *buttons(s.playing), *slider_updates(s))

    @refusing
    def on_task(task, request: gr.Request):
        if not isinstance(task, str):
            raise ValueError(f"unknown task {task!r}; this demo has {', '.join(source.tasks)}")
        s = sessions.get(request)
        s.reset(task)
        return (s.display(), s.status(), *slider_updates(s))

    @refusing
    def on_agent(on, request: gr.Request):
        """The policy drives (a new start: in the real task's first frame where MuJoCo is installed) or not."""
        if not isinstance(on, (bool, np.bool_)):
            raise ValueError(f"the agent switch must be true or false, got {on!r}")
        s = sessions.get(request)
        s.set_agent(bool(on))
        return s.display(), s.status(), *slider_updates(s)

    @refusing
    def on_reset(seed, request: gr.Request):
        """Start again from a new start frame (seed >= 0: a reproducible start and noise; -1: random)."""
        seed = -1 if seed is None else checked_number("the seed", seed, -1, 2**31 - 1, integer=True)
        s = sessions.get(request)
        s.reset(seed=None if seed < 0 else seed)
        return s.display(), s.status()

    @refusing
    def on_step(request: gr.Request, *values):
        s = sessions.get(request)
        s.playing = False
        s.set_sliders(values)
        s.advance()
        return s.display(), s.status(), *buttons(False)

    def on_play(request: gr.Request):
        s = sessions.get(request)
        with s.lock:
            if s.playing:
                return
            s.playing = True
            s.timing.frame_times.clear()
        yield gr.skip(), s.status(), *buttons(True)
        period = 1.0 / options.max_fps if options.max_fps > 0 else 0.0
        next_time = time.perf_counter()
        try:
            while s.playing and not s.closed:
                s.advance()
                yield s.display(), s.status(), gr.skip(), gr.skip()
                next_time += period
                delay = next_time - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_time = time.perf_counter()
        finally:
            s.playing = False
        yield gr.skip(), s.status(), *buttons(False)

    def on_pause(request: gr.Request):
        s = sessions.get(request)
        s.playing = False
        return s.status()

    @refusing
    def on_sliders(request: gr.Request, *values):
        sessions.get(request).set_sliders(values)

    def on_select(delta):
        def handler(request: gr.Request):
            s = sessions.get(request)
            s.select(delta)
            return (s.status(), *slider_updates(s))
        return handler

    def on_key(name, pressed):
        def handler(request: gr.Request):
            sessions.get(request).key(name, pressed)
        return handler

    @refusing
    def on_steps(k, request: gr.Request):
        s = sessions.get(request)
        s.set_steps(k)
        return s.status()

    @refusing
    def on_context(c, request: gr.Request):
        s = sessions.get(request)
        s.set_context(c)
        return s.status()

    def on_unload(request: gr.Request):
        sessions.close(request)

    # ------------------------------------------------------------------ open-loop handlers

    def on_openloop_task(task):
        if not source.has_data:
            return gr.update()
        eps = [str(e) for e in source.episodes(task)]
        return gr.update(choices=["random"] + eps, value="random")

    @refusing
    def on_openloop(task, episode, context_frames, horizon, k, context_length, request: gr.Request):
        if not source.has_data:
            raise gr.Error("the open-loop view needs a data set: start the demo with --data DIR")
        if not isinstance(task, str) or task not in source.tasks:
            raise ValueError(f"unknown task {task!r}; this demo has {', '.join(source.tasks)}")
        ep = None
        if episode not in (None, "", "random"):
            ep = checked_number("the episode", episode, 0, 2**31 - 1, integer=True)
            if ep not in set(int(e) for e in source.episodes(task)):
                raise ValueError(f"episode {episode!r} is not a held-out episode of {task}")
        context_frames = checked_number("the context frames", context_frames, 1, 16, integer=True)
        horizon = checked_number("the horizon", horizon, 1, 64, integer=True)
        context_length = checked_number("the context length", context_length, 1, MAX_CONTEXT, integer=True)
        if str(k) not in steps_choices:
            raise ValueError(f"K must be one of {', '.join(steps_choices)}, got {k!r}")
        s = sessions.get(request)
        seed = int(s.rng.integers(2**31))
        result = open_loop(model, source, task, context_frames=context_frames, horizon=horizon,
                           n_steps=int(k), context_length=context_length, seed=seed, episode=ep)
        gif = side_by_side_gif(result, tempfile.mktemp(suffix=".gif", dir=gif_dir))
        steps = np.arange(1, len(result.truth) + 1)
        df = pd.concat([pd.DataFrame({"step": steps, "PSNR (dB)": v, "series": name}) for name, v in (
            ("model", result.psnr_model), ("repeat last context frame", result.psnr_floor),
            ("tokenizer reconstruction", result.psnr_recon))], ignore_index=True)
        at = lambda h: f"{result.psnr_model[h - 1]:.1f}" if h <= len(steps) else "–"
        summary = (f"episode {result.episode} of {result.task}: {len(result.context)} context frame(s), "
                   f"{len(result.truth)} predicted, K = {k}, window {context_length} · mean PSNR "
                   f"**{result.psnr_model.mean():.2f} dB** (repeat-last floor {result.psnr_floor.mean():.2f} dB, "
                   f"tokenizer ceiling {result.psnr_recon.mean():.2f} dB) · at steps 1/4/8/16: "
                   f"{at(1)} / {at(4)} / {at(8)} / {at(16)} dB · {result.seconds:.1f} s")
        return gif, comparison_grid(result), df, summary

    # ------------------------------------------------------------------ layout

    with gr.Blocks(title=title, delete_cache=(300, 600)) as demo:
        gr.Markdown(f"## {title}\n{model.describe()}  \n{source.describe()}")
        with gr.Tabs():
            with gr.Tab("Interactive"):
                with gr.Row():
                    with gr.Column(scale=3, min_width=400):
                        frame = gr.Image(type="numpy", format="png", interactive=False, show_label=False,
                                         height=520, elem_id="d4-frame", buttons=["fullscreen"])
                        status = gr.Markdown(elem_id="d4-status")
                        gr.HTML(KEYS_HELP)
                    with gr.Column(scale=2, min_width=280):
                        task = gr.Dropdown(source.tasks, value=options.task or source.tasks[0], label="task",
                                           elem_id="d4-task")
                        with gr.Row():
                            play = gr.Button("Play", variant="primary", elem_id="d4-play")
                            pause = gr.Button("Pause", interactive=False, elem_id="d4-pause")
                        with gr.Row():
                            step = gr.Button("Step", elem_id="d4-step")
                            reset = gr.Button("Reset", elem_id="d4-reset")
                        steps = gr.Radio(steps_choices, value=str(options.n_steps), label="shortcut steps K per frame",
                                         elem_id="d4-steps")
                        context = gr.Slider(1, MAX_CONTEXT, value=options.context_length, step=1,
                                            label="context length (frames)", elem_id="d4-context")
                        agent = gr.Checkbox(False, label="the agent drives (the policy head chooses the actions; "
                                            "beside it, the same policy in the real task)",
                                            visible=bool(getattr(model, "has_agent", False)), elem_id="d4-agent")
                        sliders = [gr.Slider(-1.0, 1.0, value=0.0, step=0.05, label=f"action {d + 1}",
                                             elem_id=f"d4-action-{d}") for d in range(n_sliders)]
                reset_seed = gr.Number(-1, precision=0, visible=False, label="seed")
                key_buttons = {name: gr.Button(name, visible="hidden", elem_id=f"d4-key-{name}")
                               for name in ("left", "right", "up-press", "up-release", "down-press", "down-release")}
            with gr.Tab("Open loop vs. ground truth"):
                if not source.has_data:
                    gr.Markdown("This view needs a data set: start the demo with `--data DIR`.")
                with gr.Row():
                    ol_task = gr.Dropdown(source.tasks, value=options.task or source.tasks[0], label="task")
                    ol_episode = gr.Dropdown(["random"], value="random", label="held-out episode")
                    ol_context = gr.Slider(1, 16, value=4, step=1, label="context frames")
                    ol_horizon = gr.Slider(1, 64, value=16, step=1, label="horizon (frames)")
                with gr.Row():
                    ol_steps = gr.Radio(steps_choices, value=str(min(4, model.k_max)), label="K")
                    ol_window = gr.Slider(1, MAX_CONTEXT, value=24, step=1, label="context length (frames)")
                    ol_run = gr.Button("Run open-loop rollout", variant="primary", interactive=source.has_data)
                ol_summary = gr.Markdown()
                with gr.Row():
                    ol_gif = gr.Image(type="filepath", label="ground truth | model (context first)", interactive=False,
                                      elem_id="d4-gif", height=300)
                    ol_plot = gr.LinePlot(x="step", y="PSNR (dB)", color="series", title="per-frame PSNR",
                                          height=300)
                ol_grid = gr.Image(type="numpy", format="png", label="top: ground truth, bottom: model",
                                   interactive=False, elem_id="d4-grid")

        play_outputs = [frame, status, play, pause]
        demo.load(on_load, outputs=[frame, status, task, steps, context, play, pause, *sliders],
                  api_visibility="private")
        demo.unload(on_unload)
        task.input(on_task, inputs=task, outputs=[frame, status, *sliders], api_name="set_task")
        agent.input(on_agent, inputs=agent, outputs=[frame, status, *sliders], api_name="set_agent")
        reset.click(on_reset, inputs=reset_seed, outputs=[frame, status], api_name="reset", show_progress="minimal")
        step.click(on_step, inputs=sliders, outputs=[frame, status, play, pause], api_name="step",
                   show_progress="hidden")
        play.click(on_play, outputs=play_outputs, concurrency_limit=None, api_visibility="private",
                   show_progress="hidden")
        pause.click(on_pause, outputs=status, concurrency_limit=None, api_visibility="private", show_progress="hidden")
        gr.on([s.input for s in sliders], on_sliders, inputs=sliders, concurrency_limit=None,
              api_visibility="private", show_progress="hidden")
        for name, delta in (("left", -1), ("right", +1)):
            key_buttons[name].click(on_select(delta), outputs=[status, *sliders], concurrency_limit=None,
                                    trigger_mode="multiple", api_visibility="private", show_progress="hidden")
        for name in ("up", "down"):
            for pressed in (True, False):
                key_buttons[f"{name}-{'press' if pressed else 'release'}"].click(
                    on_key(name, pressed), concurrency_limit=None, trigger_mode="multiple",
                    api_visibility="private", show_progress="hidden")
        steps.input(on_steps, inputs=steps, outputs=status, api_visibility="private", show_progress="hidden")
        context.release(on_context, inputs=context, outputs=status, api_visibility="private", show_progress="hidden")
        ol_task.change(on_openloop_task, inputs=ol_task, outputs=ol_episode, api_visibility="private")
        demo.load(on_openloop_task, inputs=ol_task, outputs=ol_episode, api_visibility="private")
        ol_run.click(on_openloop, inputs=[ol_task, ol_episode, ol_context, ol_horizon, ol_steps, ol_window],
                     outputs=[ol_gif, ol_grid, ol_plot, ol_summary], api_name="open_loop")
    demo.queue(default_concurrency_limit=4)
    demo.sessions = sessions
    return demo



def launch(demo, host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Serve `demo` (blocking unless prevent_thread_lock=True) with the page's CSS and keyboard script."""
    return demo.launch(server_name=host, server_port=port, css=CSS, head=HEAD, show_error=True,
                       footer_links=["api"], quiet=True, **kwargs)
