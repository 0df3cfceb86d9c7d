"""Running a detector: the network wrapper, its input contract, device, precision, memory and masks."""
