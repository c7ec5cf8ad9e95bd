"""The quickstart: from nothing to a playable world model. It collects DMControl episodes, trains
the tokenizer, trains the dynamics model, writes a report of PSNR tables and opens the demo, each
stage a subprocess of the library's own entry points (`shared.data.collect`,
`dreamer4_torch.train`, `demo`), sized by a recipe of `shared.recipes`.

    python -m quickstart --help
"""
