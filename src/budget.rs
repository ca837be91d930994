//! [`RetryBudget`]: a token bucket that bounds how many retries an endpoint
//! gets, so that retries cannot multiply the load on a failing service.
//!
//! Every request through a policy draws on the bucket of its endpoint
//! (host and port, see [`Scope`](crate::Scope)), shared by every clone of
//! the layer or middleware built from that policy:
//! - a retry costs [`retry_cost`](RetryBudget::retry_cost) tokens, or
//!   [`timeout_cost`](RetryBudget::timeout_cost) after a timeout (a hung
//!   server is the most expensive kind to retry);
//! - a request that succeeds at its first attempt puts back
//!   [`success_refund`](RetryBudget::success_refund) tokens, and one that
//!   succeeds after retries puts back what its retries cost;
//! - when the bucket cannot pay, the request is not retried and fails with
//!   [`Error::RetryBudgetExhausted`](crate::Error::RetryBudgetExhausted),
//!   which carries the last response.
//!
//! The defaults are the AWS SDKs' retry quota (smithy-rs "standard" mode):
//! 500 tokens, 5 per retry, 10 per retry after a timeout, 1 back per
//! success. A bucket starts full, so an endpoint that was healthy gets 100
//! retries at once in an outage, then one retry per 5 first-time successes;
//! a service failing less than one request in six never drains it, and
//! retries that succeed pay for themselves. In a total outage of 1,000
//! concurrent requests with 3 retries each, the server sees 1,100 requests
//! instead of 4,000.
//!
//! ```
//! use http_resilience::{RetryBudget, RetryPolicy};
//!
//! let policy = RetryPolicy::builder()
//!     .retry_budget(RetryBudget::default().capacity(100))
//!     .build()?;
//! assert_eq!(policy.retry_budget().unwrap().capacity_tokens(), 100);
//! // Or without a budget:
//! let unbounded = RetryPolicy::builder().retry_budget(None).build()?;
//! assert!(unbounded.retry_budget().is_none());
//! # Ok::<(), http_resilience::ConfigError>(())
//! ```

use crate::policy::ConfigError;

/// The settings of a retry budget. See the [module docs](self).
///
/// | setting | default | source |
/// |---|---|---|
/// | [`capacity`](Self::capacity) | 500 tokens | AWS SDK retry quota |
/// | [`retry_cost`](Self::retry_cost) | 5 | AWS |
/// | [`timeout_cost`](Self::timeout_cost) | 10 | AWS |
/// | [`success_refund`](Self::success_refund) | 1 | AWS |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
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
    /// The tokens a full bucket holds, and where it starts. Default 500.
    /// Must be at least `timeout_cost`.
    pub fn capacity(mut self, tokens: u32) -> Self {
        self.capacity = tokens;
        self
    }
    /// The tokens one retry costs. Default 5. Must be positive.
    pub fn retry_cost(mut self, tokens: u32) -> Self {
        self.retry_cost = tokens;
        self
    }
    /// The tokens one retry after a timeout costs. Default 10. Must be at
    /// least `retry_cost`.
    pub fn timeout_cost(mut self, tokens: u32) -> Self {
        self.timeout_cost = tokens;
        self
    }
    /// The tokens a success at the first attempt puts back. Default 1; 0
    /// makes the budget a fixed allowance that only successful retries
    /// refill.
    pub fn success_refund(mut self, tokens: u32) -> Self {
        self.success_refund = tokens;
        self
    }

    /// The bucket's capacity.
    pub fn capacity_tokens(&self) -> u32 {
        self.capacity
    }
    /// What one retry costs.
    pub fn retry_cost_tokens(&self) -> u32 {
        self.retry_cost
    }
    /// What one retry after a timeout costs.
    pub fn timeout_cost_tokens(&self) -> u32 {
        self.timeout_cost
    }
    /// What a first-attempt success puts back.
    pub fn success_refund_tokens(&self) -> u32 {
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

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let bad =
            |what: &str, reason: String| Err(ConfigError::new(format!("{field}.{what}"), reason));
        if self.retry_cost == 0 {
            return bad("retry_cost", "must be greater than zero".into());
        }
        if self.timeout_cost < self.retry_cost {
            return bad(
                "timeout_cost",
                format!(
                    "must be at least retry_cost ({} < {})",
                    self.timeout_cost, self.retry_cost
                ),
            );
        }
        if self.capacity < self.timeout_cost {
            return bad(
                "capacity",
                format!(
                    "must be at least timeout_cost ({} < {})",
                    self.capacity, self.timeout_cost
                ),
            );
        }
        Ok(())
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
        t.deposit(&b, b.success_refund_tokens());
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
        let bad = [
            (RetryBudget::default().retry_cost(0), "b.retry_cost"),
            (RetryBudget::default().timeout_cost(4), "b.timeout_cost"),
            (RetryBudget::default().capacity(9), "b.capacity"),
        ];
        for (budget, field) in bad {
            assert_eq!(budget.validate("b").unwrap_err().field(), field);
        }
        assert!(RetryBudget::default().validate("b").is_ok());
    }
}
