//! Ending what was issued: RFC 7009 revocation of a refresh token (its whole family) and
//! logout (the family and its live access tokens, written to the revocation store).

use super::*;

impl TokenService {
    pub(super) async fn revoke_access(&self, live: &[(String, i64)]) -> usize {
        let mut n = 0;
        for (jti, exp) in live {
            let ok = self.revocation.revoke_jti(jti, *exp).await;
            if let Err(e) = &ok {
                tracing::warn!(error = %e, "cannot revoke an access token");
            }
            self.metrics.record_revocation("jti", ok.is_ok());
            n += usize::from(ok.is_ok());
        }
        n
    }

    /// Revokes a family and every access token still alive in it; how many it revoked
    /// (`None`: no such family).
    pub(super) async fn revoke_family(&self, family: &str, now: i64) -> Result<Option<usize>, OAuthError> {
        match self.end_family(family, now).await? {
            Some(live) => Ok(Some(self.revoke_access(&live).await)),
            None => Ok(None),
        }
    }

    /// Marks a family revoked in the refresh store; its live access tokens, not yet revoked.
    async fn end_family(&self, family: &str, now: i64) -> Result<Option<Vec<(String, i64)>>, OAuthError> {
        let revoked = self.refresh.revoke_family(family, now).await;
        self.metrics.record_revocation("family", revoked.is_ok());
        revoked.map(|f| f.map(|f| f.live_access)).map_err(|e| {
            tracing::warn!(error = %e, "cannot revoke a refresh family");
            OAuthError::TemporarilyUnavailable
        })
    }

    /// Ends the session of a presented refresh token if the store holds that token (spent
    /// or not); `None`, and nothing revoked, for a token it does not hold.
    async fn end_family_with_token(
        &self,
        family: &str,
        hash: &str,
        now: i64,
    ) -> Result<Option<Vec<(String, i64)>>, OAuthError> {
        match self.refresh.revoke_with_token(family, hash, now).await {
            Ok(None) => {
                tracing::info!("revocation with a refresh token the store does not hold: nothing revoked");
                Ok(None)
            }
            Ok(Some(f)) => {
                self.metrics.record_revocation("family", true);
                Ok(Some(f.live_access))
            }
            Err(e) => {
                self.metrics.record_revocation("family", false);
                tracing::warn!(error = %e, "cannot revoke a refresh family");
                Err(OAuthError::TemporarilyUnavailable)
            }
        }
    }

    /// RFC 7009: a refresh token ends its session (and that session's access tokens); an
    /// access token is revoked until its `exp`. Unknown or invalid tokens are not an error
    /// and revoke nothing: `<family>.<anything>` must be a token the store holds.
    pub async fn revoke(&self, token: &str, client: IpAddr) -> Result<(), OAuthError> {
        self.revoke_per_address.take(&client.to_string()).map_err(|w| self.throttled("revoke_address", w))?;
        let now = unix_now();
        if let Some((family, hash)) = refresh::parse(token) {
            if let Some(live) = self.end_family_with_token(family, &hash, now).await? {
                self.revoke_access(&live).await;
            }
        } else if let Some(own) = self.verify_own(token).filter(|t| t.exp > now) {
            let ok = self.revocation.revoke_jti(&own.jti, own.exp).await;
            self.metrics.record_revocation("jti", ok.is_ok());
            ok.map_err(|_| OAuthError::TemporarilyUnavailable)?;
        }
        Ok(())
    }

    /// Logout: the bearer access token's `jti` and its session (`sid`), and the session of
    /// `refresh_token` if the store holds that token, are revoked.
    pub async fn logout(
        &self,
        access: Option<&str>,
        refresh_token: Option<&str>,
        client: IpAddr,
    ) -> Result<LoggedOut, OAuthError> {
        self.revoke_per_address.take(&client.to_string()).map_err(|w| self.throttled("revoke_address", w))?;
        if access.is_none() && refresh_token.is_none() {
            return Err(OAuthError::InvalidRequest(
                "give the access token as a bearer token, or a refresh_token".into(),
            ));
        }
        let now = unix_now();
        // Every access token to revoke, once: the bearer's and each session's live ones.
        let mut access_tokens = std::collections::BTreeMap::new();
        let mut families = Vec::new();
        if let Some(token) = access {
            let own = self.verify_own(token).ok_or(OAuthError::InvalidToken)?;
            if own.exp > now {
                access_tokens.insert(own.jti, own.exp);
            }
            families.extend(own.sid);
        }
        let mut sessions = 0;
        if let Some(rt) = refresh_token {
            let Some((family, hash)) = refresh::parse(rt) else {
                return Err(OAuthError::InvalidRequest("refresh_token is malformed".into()));
            };
            // The verified bearer token already proves its own session.
            if !families.iter().any(|f| f == family) {
                if let Some(live) = self.end_family_with_token(family, &hash, now).await? {
                    sessions += 1;
                    access_tokens.extend(live);
                }
            }
        }
        // Only from verified access tokens: their signature proves the `sid`.
        for family in &families {
            if let Some(live) = self.end_family(family, now).await? {
                sessions += 1;
                access_tokens.extend(live);
            }
        }
        let live: Vec<(String, i64)> = access_tokens.into_iter().collect();
        let revoked = self.revoke_access(&live).await;
        if revoked < live.len() {
            return Err(OAuthError::TemporarilyUnavailable);
        }
        Ok(LoggedOut { access_tokens: revoked, sessions })
    }
}
