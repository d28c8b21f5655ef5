/*
 * fa.c — the forward-auth state machine: what happens to one request between its parse (conn.c)
 * and its answer.
 *
 *   fresh answer held       -> 200 hit at once (and, near the end of its freshness, one background
 *                              revalidation: refresh ahead)
 *   held but past fresh-ttl -> ask the IdP (revalidated), a held answer if it fails (stale)
 *   nothing held            -> ask the IdP (miss); concurrent misses of one key share one call
 *                              (single flight: the others JOIN it and get its outcome)
 *   sign-out / logout       -> purge what the cache knows of the session, then the IdP, at most
 *                              --signout-rate a second (more wait their turn, or get 503)
 *   no credential, login    -> the IdP, never stored (bypass)
 *
 * What to do with the IdP's answer is policy_on_idp_answer's verdict (policy.c, a pure function);
 * this file only carries it out. A request that needs the IdP is a struct fareq in the worker's
 * request table; worker_int.h says who owns it in each state. The breaker decides whether the IdP
 * is asked at all, on the monotonic clock; answers' lifetimes are wall time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "epoch.h"
#include "log.h"
#include "sids.h"
#include "worker_int.h"

/* ---- the request table ---- */

/* A new request for connection c (NULL: a background revalidation), in state REQ_NEW. Returns its
 * slot, or -E2BIG (too large to forward), -ENOMEM, -EBUSY (table full). */
static int req_new(struct worker *w, struct conn *c, const struct http_req *req,
                   const struct policy_req *pr)
{
    struct reqslot *s;
    struct fareq *p;
    uint32_t slot = w->req_free;

    if (slot == SLOT_NONE)
        return -EBUSY;
    if (!(p = malloc(sizeof(*p) + UPREQ_MAX)))
        return -ENOMEM;
    memset(p, 0, sizeof(*p));
    p->kind = pr->kind;
    p->deadline_ms = w->mono_ms + w->cfg->upstream_timeout_ms;
    p->result = RES_BYPASS;
    p->upreq_len = policy_upstream_request(w->cfg, req, p->upreq, UPREQ_MAX);
    if (p->upreq_len == 0) {
        free(p);
        return -E2BIG;
    }
    p->conn_slot = SLOT_NONE;
    if (c) {
        p->conn_slot = (uint32_t)(c - w->conns);
        p->conn_gen = c->gen;
        p->pc.keep_alive = req->keep_alive && !w->draining;
        p->pc.http10 = req->minor_version == 0;
        p->pc.head = http_method_is(req, "HEAD");
    }
    if (pr->has_cred && pr->q.host) { /* no key parts for the login flow (policy_classify) */
        p->host_len = (uint32_t)(pr->q.host_len < SHM_MAX_HOST ? pr->q.host_len : SHM_MAX_HOST);
        memcpy(p->host, pr->q.host, p->host_len);
    }
    s = &w->reqs[slot];
    w->req_free = s->next_free;
    s->r = p;
    s->state = REQ_NEW;
    return (int)slot;
}

/* The one place a request ends. */
static void req_end(struct worker *w, uint32_t slot)
{
    struct reqslot *s = &w->reqs[slot];

    free(s->r);
    s->r = NULL;
    s->state = REQ_FREE;
    s->gen++;
    s->next_free = w->req_free;
    w->req_free = slot;
}

/* The connection waiting on request slot, if it is still open. While draining, its answer closes
 * it. */
static struct conn *req_conn(struct worker *w, uint32_t slot)
{
    struct fareq *p = w->reqs[slot].r;
    struct conn *c;

    if (p->conn_slot == SLOT_NONE || !(c = conn__get(w, p->conn_slot, p->conn_gen)) ||
        c->state != CONN_WAITING || c->req_slot != slot)
        return NULL;
    if (w->draining)
        p->pc.keep_alive = 0;
    return c;
}

/* End request slot and let its connection (if any) go on with its input. */
static void req_finish(struct worker *w, uint32_t slot)
{
    struct conn *c = req_conn(w, slot);

    req_end(w, slot);
    if (c)
        conn__resume(w, c);
}

void fa__conn_gone(struct worker *w, uint32_t slot, uint32_t gen)
{
    /* A request in a call is ended by the call; one being decided by the function deciding it;
     * a paced one by the pace queue when its turn comes (fa__pace). One waiting on another's
     * flight has no one else: the flight's outcome will find its slot reused (the generation)
     * and drop it. */
    if (slot < w->max_reqs && w->reqs[slot].gen == gen && w->reqs[slot].state == REQ_JOINED)
        req_end(w, slot);
}

void fa__free_all(struct worker *w)
{
    for (uint32_t i = 0; w->reqs && i < w->max_reqs; i++)
        free(w->reqs[i].r);
}

/* ---- answers ---- */

/* The answer held for digest, unless a purge covers it (stamped, epoch.h, though the purge thread
 * may not have removed it yet). 0, or -ENOENT. flags: shm_lookup's. An exact stamp that ended
 * between the lookup and the check (its walk removed the answer found) makes it look again. */
static int held_answer(struct worker *w, const uint8_t digest[SHM_DIGEST_LEN], unsigned flags,
                       struct shm_answer *a)
{
    for (int tries = 0; tries < 3; tries++) {
        uint64_t released = epoch_released(w->d->epochs);
        if (shm_lookup(&w->d->shm, digest, w->now_ms, a, w->lbuf, sizeof(w->lbuf), flags) != 0)
            return -ENOENT;
        if (epoch_hides(w->d->epochs, a->confirmed_ms, a->user, a->user_len, a->key.cred))
            return -ENOENT;
        if (epoch_released(w->d->epochs) == released)
            return 0;
    }
    return -ENOENT;
}

/* The IdP could not be asked or failed: a held answer within the outage grace, else 503. */
static void serve_failed(struct worker *w, struct conn *c, struct fareq *p, const char *cause)
{
    struct shm_answer a;

    if (p->cacheable && held_answer(w, p->key.digest, 0, &a) == 0 &&
        policy_stale_ok(w->cfg, &a, w->now_ms)) {
        conn__answer_identity(w, c, &p->pc, a.hdrs, a.hdrs_len, RES_STALE);
        return;
    }
    conn__answer_unavailable(w, c, &p->pc, cause);
}

/* End p's single flight (if it leads one) and tell its waiters the outcome. */
static void deliver(struct worker *w, struct fareq *p, enum flight_outcome o)
{
    struct flight_waiter *fw;
    size_t n;

    if (!p->leader)
        return;
    p->leader = 0;
    n = flight_end(w->d->flights, p->key.digest, &fw);
    for (size_t i = 0; i < n; i++) {
        if (fw[i].worker == w->id)
            fa__outcome(w, fw[i].slot, fw[i].gen, o);
        else if (fw[i].worker < w->d->nworkers)
            worker_post(w->d->workers[fw[i].worker], &fw[i], o);
    }
    free(fw);
}

/* ---- the IdP ---- */

static void idp_call(struct worker *w, const char *req, size_t len, int64_t deadline_ms,
                     upstream_done_fn *done, uint32_t ctx, uint32_t ctx_gen)
{
    if (w->fake_call)
        w->fake_call(w, req, len, done, ctx, ctx_gen);
    else
        upstream__call(w, req, len, deadline_ms, done, ctx, ctx_gen);
}

/* The breaker's probe asks what last failed (its method-less target, no credentials): an IdP that
 * fails only its auth endpoints must not look healthy because "/" answers. */
static void probe_from(struct worker *w, const struct fareq *p)
{
    const char *sp1 = memchr(p->upreq, ' ', p->upreq_len), *sp2;

    if (!sp1 || !(sp2 = memchr(sp1 + 1, ' ', p->upreq_len - (size_t)(sp1 + 1 - p->upreq))))
        return;
    int n = snprintf(w->probe_req, sizeof(w->probe_req),
                     "GET %.*s HTTP/1.1\r\nHost: %s\r\nUser-Agent: authcached-probe\r\n\r\n",
                     (int)(sp2 - sp1 - 1), sp1 + 1, w->cfg->upstream.host_header);
    if (n > 0 && (size_t)n < sizeof(w->probe_req))
        w->probe_len = (size_t)n;
}

/* Whether a failed call says the IdP is down, and so counts for the breaker that fails everybody
 * fast: a transport failure (unreachable, timed out, reset, garbled) or 502/503/504. Not this
 * process's own limits (no IdP connection or descriptor free), nor a 500 that one request provoked
 * (a misconfigured route answers 500 every time: only its own requests should see that). */
static int idp_down(const struct http_resp *r, int local)
{
    if (r)
        return r->status == 502 || r->status == 503 || r->status == 504;
    return !local;
}

/* Count a failed call and, if it says the IdP is down, tell the breaker. Local failures are
 * logged at most once a second per worker. */
static void idp_failure(struct worker *w, const char *cause, int down, int local)
{
    if (local) {
        if (w->mono_ms - w->local_warned_ms >= 1000) {
            w->local_warned_ms = w->mono_ms;
            log_warn("idp_local", "worker %u cannot ask the identity provider: %s", w->id, cause);
        }
        return;
    }
    M_ADD(w->m, idp_failures, 1);
    if (!down) {
        log_warn("idp_error", "identity provider call failed: %s (not counted as an outage)",
                 cause);
        return;
    }
    if (!breaker_is_open(&w->d->breaker))
        log_warn("idp_error", "identity provider call failed: %s", cause);
    breaker_failure(&w->d->breaker, w->mono_ms, cause);
}

/* Store the identity of a 2xx for p's key. Returns 1 if stored. A user name longer than the
 * segment keeps is not stored at all: cut short, a purge by the whole name would miss it. */
static int store(struct worker *w, const struct fareq *p, const struct policy_identity *id)
{
    struct shm_answer a = {.key = p->key};

    if (id->user.len > SHM_MAX_USER)
        return 0;
    policy_lifetimes(w->cfg, w->now_ms, p->held_first_seen ? p->held_first_seen : w->now_ms,
                     id->jwt_exp_ms, &a);
    a.host = p->host;
    a.host_len = p->host_len;
    a.user = id->user.p;
    a.user_len = (uint32_t)id->user.len;
    a.hdrs = w->scratch;
    a.hdrs_len = (uint32_t)id->hdrs_len;
    a.flags = id->answer_len > id->hdrs_len ? SHM_ANSWER_ROTATES : 0;
    /* A purge of this user or session (or of everything) since the call was sent: the answer is
     * older than the purge and must not outlive it. Checked before the insert, and again after it
     * for a purge that raced it (epoch.h says why that is enough). An answer confirmed in the
     * millisecond of the latest purge that covers it is hidden by it (epoch_hides: at or before)
     * until confirmed again: never dated after its own millisecond, or a purge later in that
     * same millisecond would not hide it (test_fa: test_purge_in_the_store_millisecond). */
    if (epoch_covered(w->d->epochs, p->epoch, a.user, a.user_len, p->key.cred))
        return 0;
    if (a.session_end_ms <= w->now_ms)
        return 0;
    /* The session's index first (sids.h): a session end that finds the entry stamps the credential
     * before the check below, and one that comes before it is the feed's rescan's to catch. */
    if (id->has_sid && w->d->sids)
        sids_insert(w->d->sids, id->sid_key, p->key.cred, a.session_end_ms, w->now_ms);
    if (shm_insert(&w->d->shm, &a) != 0)
        return 0;
    if (epoch_covered(w->d->epochs, p->epoch, a.user, a.user_len, p->key.cred)) {
        shm_delete(&w->d->shm, p->key.digest);
        log_debug("purged_in_flight", "an answer asked for before a purge was not kept");
        return 0;
    }
    return 1;
}

/* The completion of a request's IdP call (upstream_done_fn): carry out the verdict on the answer,
 * answer the connection if it is still there, end the request. */
static void on_idp_done(struct worker *w, uint32_t slot, uint32_t gen, const struct http_resp *r,
                        const char *body, size_t body_len, const char *cause, int local)
{
    struct reqslot *s = slot < w->max_reqs ? &w->reqs[slot] : NULL;
    struct policy_identity id = {0};
    enum policy_verdict v;
    struct fareq *p;
    struct conn *c;
    char why[64];
    int names_user = 0;

    if (!s || s->gen != gen || s->state != REQ_CALLING)
        return; /* cannot happen: a call's request is ended only here */
    s->state = REQ_NEW;
    p = s->r;
    loop__clock(w);
    c = req_conn(w, slot);
    if (r && r->status >= 200 && r->status <= 299 && (p->cacheable || p->kind == POLICY_SIGNOUT))
        names_user =
            policy_identity(w->cfg, r, w->scratch, sizeof(w->scratch), &id) == 0 && id.user.len > 0;
    v = r ? policy_on_idp_answer(p->kind, p->cacheable, r->status, names_user) : POLICY_DO_FAIL;
    if (v == POLICY_DO_FAIL) {
        if (r) {
            snprintf(why, sizeof(why), "answered %d", r->status);
            cause = why;
        }
        idp_failure(w, cause, idp_down(r, local), local);
        if (idp_down(r, local))
            probe_from(w, p);
        deliver(w, p, FLIGHT_FAILED);
        if (c)
            serve_failed(w, c, p, cause);
        req_finish(w, slot);
        return;
    }
    breaker_success(&w->d->breaker);
    switch (v) {
    case POLICY_DO_STORE: {
        int stored = store(w, p, &id);
        deliver(w, p, stored ? FLIGHT_STORED : FLIGHT_RETRY);
        if (c) /* with the IdP's Set-Cookie, which is not stored */
            conn__answer_identity(w, c, &p->pc, w->scratch, id.answer_len, p->result);
        break;
    }
    case POLICY_DO_SIGNOUT_PURGE: { /* the IdP named whose session ends: all of theirs go */
        struct purge pu = {.kind = PURGE_USER, .user = id.user.p, .user_len = id.user.len};
        daemon_purge_soon(w->d, &pu, 0, "sign-out");
        goto pass;
    }
    case POLICY_DO_DROP_PASS:
        shm_delete(&w->d->shm, p->key.digest);
        /* fall through */
    default: /* POLICY_DO_PASS */
    pass:
        deliver(w, p, FLIGHT_RETRY);
        if (c) /* the IdP's own verdict, never stored */
            conn__answer_passthrough(w, c, &p->pc, r, body, body_len, p->result);
        break;
    }
    req_finish(w, slot);
}

static void call_idp(struct worker *w, uint32_t slot)
{
    struct reqslot *s = &w->reqs[slot];

    s->r->epoch = epoch_now(w->d->epochs);
    s->state = REQ_CALLING; /* from here the call owns it: on_idp_done may run before we return */
    idp_call(w, s->r->upreq, s->r->upreq_len, s->r->deadline_ms, on_idp_done, slot, s->gen);
}

/* Ask the IdP for request slot, whose connection is parked on it (or fail fast while the breaker
 * is open). With coalesce, join the key's flight if there is one. */
static void ask_idp(struct worker *w, uint32_t slot, int coalesce)
{
    struct reqslot *s = &w->reqs[slot];
    struct fareq *p = s->r;

    if (!breaker_allow(&w->d->breaker, w->mono_ms)) {
        struct conn *c = req_conn(w, slot);
        if (c)
            serve_failed(w, c, p, "circuit open after repeated failures");
        req_finish(w, slot);
        return;
    }
    if (coalesce && p->cacheable) {
        struct flight_waiter me = {w->id, slot, s->gen};
        int rc = flight_begin(w->d->flights, p->key.digest, &me);
        if (rc == 0) {
            s->state = REQ_JOINED;
            M_ADD(w->m, idp_coalesced, 1);
            return; /* fa__outcome goes on */
        }
        p->leader = rc == 1;
    }
    call_idp(w, slot);
}

void fa__outcome(struct worker *w, uint32_t slot, uint32_t gen, enum flight_outcome o)
{
    struct reqslot *s = slot < w->max_reqs ? &w->reqs[slot] : NULL;
    struct shm_answer a;
    struct fareq *p;
    struct conn *c;

    if (!s || s->gen != gen || s->state != REQ_JOINED)
        return; /* its connection closed meanwhile */
    s->state = REQ_NEW;
    p = s->r;
    loop__clock(w);
    if (!(c = req_conn(w, slot))) {
        req_end(w, slot);
        return;
    }
    /* The stored answer is at least as new as this request, fresh or not (--fresh-ttl 0). */
    if (o == FLIGHT_STORED && held_answer(w, p->key.digest, 0, &a) == 0) {
        conn__answer_identity(w, c, &p->pc, a.hdrs, a.hdrs_len, p->result);
    } else if (o == FLIGHT_FAILED) {
        serve_failed(w, c, p, "identity provider failing");
    } else if (w->mono_ms >= p->deadline_ms) {
        serve_failed(w, c, p, "timed out"); /* the leader's call used up this request's time */
    } else {
        ask_idp(w, slot, 0); /* on its own, in the time left */
        return;
    }
    req_finish(w, slot);
}

/* ---- background: refresh ahead and the breaker's probe ---- */

static void start_background(struct worker *w, const struct http_req *req,
                             const struct policy_req *pr, const struct shm_key *key,
                             int64_t first_seen)
{
    struct fareq *p;
    int slot;

    if (!breaker_allow(&w->d->breaker, w->mono_ms) ||
        flight_begin(w->d->flights, key->digest, NULL) != 1)
        return;
    if ((slot = req_new(w, NULL, req, pr)) < 0) {
        struct flight_waiter *fw;
        flight_end(w->d->flights, key->digest, &fw);
        free(fw);
        return;
    }
    p = w->reqs[slot].r;
    p->leader = 1;
    p->cacheable = 1;
    p->key = *key;
    shm_key_cred(&w->d->shm, pr->q.cred_kind, pr->q.cred, pr->q.cred_len, p->key.cred);
    p->held_first_seen = first_seen;
    p->result = RES_REVALIDATED;
    M_ADD(w->m, idp_background, 1);
    call_idp(w, (uint32_t)slot);
}

/* The breaker's probe: an answer that does not say the IdP is down closes the breaker; any
 * failure, even a local one, ends this probe (the next comes after a longer back-off). */
static void on_probe_done(struct worker *w, uint32_t ctx, uint32_t ctx_gen,
                          const struct http_resp *r, const char *body, size_t body_len,
                          const char *cause, int local)
{
    char why[64];

    (void)ctx, (void)ctx_gen, (void)body, (void)body_len;
    loop__clock(w);
    if (r && !idp_down(r, 0)) {
        breaker_success(&w->d->breaker);
        return;
    }
    if (r) {
        snprintf(why, sizeof(why), "answered %d", r->status);
        cause = why;
    }
    if (!local)
        M_ADD(w->m, idp_failures, 1);
    breaker_failure(&w->d->breaker, w->mono_ms, cause);
}

void fa__tick(struct worker *w)
{
    if (breaker_take_probe(&w->d->breaker, w->mono_ms)) { /* one worker wins it */
        M_ADD(w->m, idp_background, 1);
        idp_call(w, w->probe_req, w->probe_len, w->mono_ms + w->cfg->upstream_timeout_ms,
                 on_probe_done, SLOT_NONE, 0);
    }
}

/* ---- sign-outs paced (--signout-rate) ----
 *
 * Every sign-out is an IdP call (its answer is the IdP's own), and a flood of them, of sessions
 * nobody holds, would otherwise take the worker's core from the hits and load the IdP. So they go
 * to the IdP at most at this worker's share of --signout-rate: a token bucket holding one second's
 * worth, and a FIFO of those waiting for a token. One that would wait past --upstream-timeout is
 * answered 503 at once, unsent and nothing purged (as if the IdP had been unreachable: never a
 * 2xx). A queued one whose client left is dropped when its turn comes, without asking the IdP. */

static void pace_refill(struct worker *w)
{
    struct pace *q = &w->pace;

    if (w->mono_ms > q->refilled_ms) {
        q->tokens += (double)(w->mono_ms - q->refilled_ms) * q->per_ms;
        if (q->tokens > q->burst)
            q->tokens = q->burst;
        q->refilled_ms = w->mono_ms;
    }
}

void fa__pace(struct worker *w)
{
    struct pace *q = &w->pace;

    if (q->per_ms == 0)
        return;
    pace_refill(w);
    while (q->n > 0) {
        uint32_t slot = q->head;
        struct reqslot *s = &w->reqs[slot];
        int late = w->mono_ms >= s->r->deadline_ms;
        struct conn *c;

        if (!late && q->tokens < 1.0)
            break;
        q->head = s->pace_next;
        if (q->head == SLOT_NONE)
            q->tail = SLOT_NONE;
        q->n--;
        s->state = REQ_NEW;
        if (!(c = req_conn(w, slot))) {
            req_end(w, slot);
        } else if (late) {
            M_ADD(w->m, signouts_shed, 1);
            conn__answer_unavailable(w, c, &s->r->pc, "too many sign-outs: not sent in time");
            req_finish(w, slot);
        } else {
            q->tokens -= 1.0;
            ask_idp(w, slot, 1);
        }
    }
}

/* May a sign-out go to the IdP now? 1: yes (its token is taken); 0: it waits its turn (pace_wait);
 * -1: no, more wait than this worker sends within --upstream-timeout. */
static int pace_admit(struct worker *w)
{
    struct pace *q = &w->pace;

    if (q->per_ms == 0)
        return 1;
    /* Only the tokens: releasing those queued from here could answer another connection and
     * resume its pipelined input inside this request's parse (w->preq, w->hdrs). The loop
     * releases them (fa__pace); meanwhile this one queues behind them. */
    pace_refill(w);
    if (q->n == 0 && q->tokens >= 1.0) {
        q->tokens -= 1.0;
        return 1;
    }
    return q->n < q->max ? 0 : -1;
}

static void pace_wait(struct worker *w, uint32_t slot)
{
    struct pace *q = &w->pace;

    w->reqs[slot].state = REQ_PACED;
    w->reqs[slot].pace_next = SLOT_NONE;
    if (q->tail == SLOT_NONE)
        q->head = slot;
    else
        w->reqs[q->tail].pace_next = slot;
    q->tail = slot;
    q->n++;
    M_ADD(w->m, signouts_paced, 1);
}

/* ---- a request ---- */

/* Purge what the cache knows of pr's session, off the request path (daemon_purge_soon): the
 * session's user if the exact key's answer names it, else the session's answers by their
 * credential digest (and the purge thread purges the users it finds among them). With several
 * session cookies the credential is all of them, but the IdP ends the session of the one it
 * reads, which the cache holds under that cookie alone: each one's answers (and users) go too. */
static void purge_session(struct worker *w, const struct policy_req *pr, const char *why)
{
    struct shm_key k;
    struct shm_answer a;
    struct purge p = {.kind = PURGE_CREDS, .ncred = 1};

    if (!pr->has_cred)
        return;
    for (size_t i = 0; i < pr->ncookies; i++) {
        shm_key_cred(&w->d->shm, SHM_CRED_COOKIE, pr->cookie_values[i].p, pr->cookie_values[i].len,
                     p.cred[0]);
        daemon_purge_soon(w->d, &p, 1, why);
    }
    shm_key_query(&w->d->shm, &pr->q, &k, 1);
    if (shm_lookup(&w->d->shm, k.digest, w->now_ms, &a, w->lbuf, sizeof(w->lbuf), 0) == 0 &&
        a.user_len > 0) {
        struct purge pu = {.kind = PURGE_USER, .user = a.user, .user_len = a.user_len};
        daemon_purge_soon(w->d, &pu, 0, why);
        return;
    }
    memcpy(p.cred[0], k.cred, SHM_CRED_LEN);
    daemon_purge_soon(w->d, &p, 1, why);
}

void fa__request(struct worker *w, struct conn *c, const struct http_req *req)
{
    struct policy_req *pr = &w->preq;
    struct policy_conn pc = {req->keep_alive && !w->draining, req->minor_version == 0,
                             http_method_is(req, "HEAD")};
    struct shm_answer a;
    struct shm_key key;
    struct fareq *p;
    int held = 0, slot, go = 1;

    policy_classify(w->cfg, req, pr);
    switch (pr->kind) {
    case POLICY_CACHEABLE:
        shm_key_query(&w->d->shm, &pr->q, &key, 0);
        if (held_answer(w, key.digest, SHM_LOOKUP_PROMOTE, &a) == 0) {
            if (w->now_ms < a.fresh_until_ms) {
                conn__answer_identity(w, c, &pc, a.hdrs, a.hdrs_len, RES_HIT);
                /* Never in the background for an answer that came with Set-Cookie, nor for an IdP
                 * that may rotate sessions there: the new cookie would reach no browser. */
                if (w->now_ms >= a.fresh_until_ms - w->refresh_ahead_ms &&
                    w->cfg->background_revalidation && !(a.flags & SHM_ANSWER_ROTATES))
                    start_background(w, req, pr, &key, a.first_seen_ms);
                return;
            }
            held = 1;
        }
        break;
    case POLICY_SIGNOUT:
    case POLICY_LOGOUT:
        /* Purge, then the IdP's own answer to this very request: a sign-out never grants what
         * the IdP would not (and a 2xx that names the user purges all of that user's). */
        if ((go = pace_admit(w)) < 0) {
            M_ADD(w->m, signouts_shed, 1);
            conn__answer_unavailable(w, c, &pc, "too many sign-outs: try again");
            return;
        }
        purge_session(w, pr, pr->kind == POLICY_SIGNOUT ? "sign-out" : "logout");
        break;
    default:
        break;
    }

    if ((slot = req_new(w, c, req, pr)) < 0) {
        if (slot == -E2BIG)
            conn__answer_status(w, c, &pc, 431, "request too large to forward");
        else
            conn__answer_unavailable(w, c, &pc, "out of memory");
        return;
    }
    p = w->reqs[slot].r;
    if (pr->kind == POLICY_CACHEABLE) {
        p->cacheable = 1;
        p->key = key;
        shm_key_cred(&w->d->shm, pr->q.cred_kind, pr->q.cred, pr->q.cred_len, p->key.cred);
        p->result = held ? RES_REVALIDATED : RES_MISS;
        p->held_first_seen = held ? a.first_seen_ms : 0;
    } else if (pr->kind == POLICY_SIGNOUT) {
        p->result = RES_SIGNOUT;
    }
    conn__park(w, c, (uint32_t)slot, w->reqs[slot].gen);
    if (go)
        ask_idp(w, (uint32_t)slot, 1);
    else
        pace_wait(w, (uint32_t)slot);
}
