"""PyTorch's CUDA caching allocator, modelled (:mod:`.caching`), and the training run's allocation sequence
written from an estimate's inventory (:mod:`.training`): the engine's training allocator reserve."""
