"""ALS recommendations: interactions, stable id maps, fitting, blockwise top-K, cold start, evaluation."""
