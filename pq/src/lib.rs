//! pqmls-pq (work in progress)
