/*
 * worker/exchange.h — transitional: the token-endpoint client moved to
 * common/exchange (oauthqctl uses it too, and ctl depends on common/ only).
 * Only worker/worker.c still includes this name; when it includes
 * "common/exchange.h" directly, delete this file.
 */
#ifndef OAUTHQ_WORKER_EXCHANGE_H
#define OAUTHQ_WORKER_EXCHANGE_H

#include "common/exchange.h"

#endif
