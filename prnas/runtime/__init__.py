"""Process-level concerns shared by search and retrain: device, seeding, checkpoints, memory."""
