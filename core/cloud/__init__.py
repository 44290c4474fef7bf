"""Cloud GPUs: offers, instances, the ledger of every provider action, jobs on rented machines."""
