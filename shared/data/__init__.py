"""The DMControl data layer: task registry, collector, on-disk dataset format, window sampler and
the import of upstream's data layout.

Modules (import the one you need; this package imports nothing heavy):
  tasks            the 30 tasks (`TASKS`, `TaskSpec`, `make_env`)
  format           the dataset on disk (`open_dataset`, `DatasetWriter`, `FORMAT_VERSION`)
  windows          windows of consecutive frames (`WindowSampler`, `split_episodes`)
  collect          `python -m shared.data.collect`: record episodes from the 30 tasks
  check            `python -m shared.data.check`: verify a dataset and print per-task statistics
  import_upstream  `python -m shared.data.import_upstream`: convert upstream's files

`tasks`, `format` and `windows` need only numpy; building environments needs the `data` extra
(mujoco, dm_control), imported lazily inside `make_env`.
"""
