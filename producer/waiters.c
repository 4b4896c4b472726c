/* waiters — see waiters.h. Buckets by FNV-1a of the id; chains are short
 * (ids are random), so unwatch's scan of every bucket stays cheap. */
#include "producer/waiters.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 1024

typedef struct waiter {
    char id[WAITERS_ID_MAX];
    httpd_req *req;
    struct waiter *next;
} waiter;

struct waiters {
    pthread_mutex_t mu; /* guards buckets and n */
    waiter *buckets[BUCKETS];
    int n, max;
};

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % BUCKETS;
}

waiters_t *waiters_new(int max)
{
    waiters_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    pthread_mutex_init(&ws->mu, NULL);
    ws->max = max;
    return ws;
}

void waiters_free(waiters_t *ws)
{
    if (!ws)
        return;
    for (int b = 0; b < BUCKETS; b++) {
        while (ws->buckets[b]) {
            waiter *w = ws->buckets[b];
            ws->buckets[b] = w->next;
            httpd_req_unref(w->req);
            free(w);
        }
    }
    pthread_mutex_destroy(&ws->mu);
    free(ws);
}

int waiters_watch(waiters_t *ws, const char *id, httpd_req *req)
{
    if (strlen(id) >= WAITERS_ID_MAX)
        return -1;
    waiter *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    snprintf(w->id, sizeof w->id, "%s", id);
    w->req = req;
    pthread_mutex_lock(&ws->mu);
    if (ws->n >= ws->max) {
        pthread_mutex_unlock(&ws->mu);
        free(w);
        return -1;
    }
    httpd_req_ref(req);
    unsigned b = hash(id);
    w->next = ws->buckets[b];
    ws->buckets[b] = w;
    ws->n++;
    pthread_mutex_unlock(&ws->mu);
    return 0;
}

void waiters_unwatch(waiters_t *ws, httpd_req *req)
{
    pthread_mutex_lock(&ws->mu);
    for (int b = 0; b < BUCKETS; b++) {
        for (waiter **pp = &ws->buckets[b]; *pp;) {
            waiter *w = *pp;
            if (w->req == req) {
                *pp = w->next;
                ws->n--;
                httpd_req_unref(w->req);
                free(w);
                pthread_mutex_unlock(&ws->mu);
                return;
            }
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&ws->mu);
}

void waiters_wake_id(waiters_t *ws, const char *id)
{
    pthread_mutex_lock(&ws->mu);
    waiter **pp = &ws->buckets[hash(id)];
    while (*pp) {
        waiter *w = *pp;
        if (strcmp(w->id, id) == 0) {
            *pp = w->next;
            ws->n--;
            httpd_wake(w->req);
            httpd_req_unref(w->req);
            free(w);
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&ws->mu);
}

void waiters_wake_all(waiters_t *ws)
{
    pthread_mutex_lock(&ws->mu);
    for (int b = 0; b < BUCKETS; b++)
        for (waiter *w = ws->buckets[b]; w; w = w->next)
            httpd_wake(w->req);
    pthread_mutex_unlock(&ws->mu);
}

int waiters_count(waiters_t *ws)
{
    pthread_mutex_lock(&ws->mu);
    int n = ws->n;
    pthread_mutex_unlock(&ws->mu);
    return n;
}
