"""Training loops the training scenario measures (``optimizers.scenarios.training``): the recipe a
run's recipe steps accumulate (``recipe.py``), the seeded data order (``data.py``), memory by
kind from torch's own accounting (``memory.py``), adapters through peft (``adapters.py``), the
single-process loop (``loop.py``) and the same loop over torch.distributed ranks
(``distributed.py``)."""
