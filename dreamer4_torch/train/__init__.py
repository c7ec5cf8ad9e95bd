"""Training of the tokenizer and the dynamics model, single process or under torchrun.

    python -m dreamer4_torch.train tokenizer --preset dmc64 --data DATA --out runs/tok
    torchrun --nproc_per_node=8 -m dreamer4_torch.train dynamics --preset dmc128 --data DATA \
        --tokenizer runs/tok/checkpoints/latest --out runs/dyn
"""
