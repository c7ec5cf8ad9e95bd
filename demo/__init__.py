"""The interactive Gradio world-model demo: `python -m demo --help`.

demo.backend   checkpoints -> a shared world model (encode, decode, per-session samplers)
demo.data      start frames and held-out episodes from a data set (or none)
demo.session   one browser session: stream, actions, timing; the open-loop evaluation
demo.app       the Gradio Blocks, the keyboard script, launch()
"""
