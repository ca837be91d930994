//! Retry budget: the settings and the sans-IO state; documented in
//! [`protection`](super).

use crate::validate::{self, Check, ConfigError};

/// The settings of a retry budget. See the [module docs](crate::protection#retry-budget). Made with
/// [`RetryBudget::builder`], which checks them, or [`RetryBudget::default`].
///
/// # Default
///
/// | setting | default | source |
/// |---|---|---|
/// | [`capacity`](RetryBudgetBuilder::capacity) | 500 tokens | AWS SDK retry quota |
/// | [`retry_cost`](RetryBudgetBuilder::retry_cost) | 5 | AWS |
/// | [`timeout_cost`](RetryBudgetBuilder::timeout_cost) | 10 | AWS |
/// | [`success_refund`](RetryBudgetBuilder::success_refund) | 1 | AWS |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryBudget {
    capacity: u32,
    retry_cost: u32,
    timeout_cost: u32,
    success_refund: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            capacity: 500,
            retry_cost: 5,
            timeout_cost: 10,
            success_refund: 1,
        }
    }
}

impl RetryBudget {
    /// A builder holding the defaults (see [`RetryBudget`]).
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            budget: RetryBudget::default(),
        }
    }
    /// The tokens a full bucket holds, and where it starts.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
    /// What one retry costs.
    pub fn retry_cost(&self) -> u32 {
        self.retry_cost
    }
    /// What one retry after a timeout costs.
    pub fn timeout_cost(&self) -> u32 {
        self.timeout_cost
    }
    /// What a first-attempt success puts back.
    pub fn success_refund(&self) -> u32 {
        self.success_refund
    }

    /// What the next retry costs: `timeout_cost` after a timeout, else
    /// `retry_cost`.
    pub fn cost(&self, after_timeout: bool) -> u32 {
        if after_timeout {
            self.timeout_cost
        } else {
            self.retry_cost
        }
    }
}

/// Builds a [`RetryBudget`]; [`build`](Self::build) checks the settings.
/// Defaults as [`RetryBudget`] lists them.
///
/// ```
/// let budget = http_resilience::RetryBudget::builder().capacity(100).build()?;
/// assert_eq!(budget.capacity(), 100);
/// let err = http_resilience::RetryBudget::builder().retry_cost(0).build().unwrap_err();
/// assert_eq!(err.field(), "retry_cost");
/// # Ok::<(), http_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct RetryBudgetBuilder {
    budget: RetryBudget,
}

impl RetryBudgetBuilder {
    /// The tokens a full bucket holds, and where it starts. Default 500.
    /// Must be at least `timeout_cost`.
    pub fn capacity(mut self, tokens: u32) -> Self {
        self.budget.capacity = tokens;
        self
    }
    /// The tokens one retry costs. Default 5. Must be positive.
    pub fn retry_cost(mut self, tokens: u32) -> Self {
        self.budget.retry_cost = tokens;
        self
    }
    /// The tokens one retry after a timeout costs. Default 10. Must be at
    /// least `retry_cost`.
    pub fn timeout_cost(mut self, tokens: u32) -> Self {
        self.budget.timeout_cost = tokens;
        self
    }
    /// The tokens a success at the first attempt puts back. Default 1; 0
    /// makes the budget a fixed allowance that only successful retries
    /// refill.
    pub fn success_refund(mut self, tokens: u32) -> Self {
        self.budget.success_refund = tokens;
        self
    }
    /// Checks the settings, in the order above; the error names the first
    /// bad one.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        let b = self.budget;
        validate::nonzero(b.retry_cost).at("retry_cost")?;
        validate::at_least(b.timeout_cost, b.retry_cost, "retry_cost").at("timeout_cost")?;
        validate::at_least(b.capacity, b.timeout_cost, "timeout_cost").at("capacity")?;
        Ok(b)
    }
}

/// A token bucket's count, as a plain value: what a
/// [`StateStore`](crate::StateStore) keeps for each endpoint. The
/// arithmetic lives here so every store applies the same rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens(pub u32);

impl Tokens {
    /// A full bucket.
    pub fn full(budget: &RetryBudget) -> Tokens {
        Tokens(budget.capacity)
    }
    /// Takes `cost` tokens if there are that many; `false` (and no change)
    /// otherwise.
    pub fn withdraw(&mut self, cost: u32) -> bool {
        match self.0.checked_sub(cost) {
            Some(left) => {
                self.0 = left;
                true
            }
            None => false,
        }
    }
    /// Puts `tokens` back, never above the capacity.
    pub fn deposit(&mut self, budget: &RetryBudget, tokens: u32) {
        self.0 = self.0.saturating_add(tokens).min(budget.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_numbers() {
        let b = RetryBudget::default();
        let mut t = Tokens::full(&b);
        assert_eq!(t, Tokens(500));
        let mut retries = 0;
        while t.withdraw(b.cost(false)) {
            retries += 1;
        }
        assert_eq!(retries, 100, "500 tokens pay for 100 retries");
        assert_eq!(t, Tokens(0));
        t.deposit(&b, b.success_refund());
        assert!(!t.withdraw(5));
        for _ in 0..4 {
            t.deposit(&b, 1);
        }
        assert!(t.withdraw(5), "five successes pay for a retry");
        assert!(!Tokens(9).clone().withdraw(b.cost(true)));
        let mut full = Tokens::full(&b);
        full.deposit(&b, 1000);
        assert_eq!(full, Tokens(500), "capped at the capacity");
    }

    #[test]
    fn validation_names_the_field() {
        let b = RetryBudget::builder;
        let bad = [
            (b().retry_cost(0), "retry_cost"),
            (b().timeout_cost(4), "timeout_cost"),
            (b().capacity(9), "capacity"),
        ];
        for (budget, field) in bad {
            assert_eq!(budget.build().unwrap_err().field(), field);
        }
        assert_eq!(b().build(), Ok(RetryBudget::default()));
    }
}
