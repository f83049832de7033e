"""Problems: what a researcher brings (evaluator, task prompt, initial program, data) and the checks,
scaffolding, data cache and fingerprints that make a problem something a run can depend on."""
