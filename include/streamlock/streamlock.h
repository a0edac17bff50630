#pragma once

// streamlock: reconcile persisted "active stream" markers against Redis stream locks.
#include "streamlock/client.h"
#include "streamlock/error.h"
#include "streamlock/log.h"
#include "streamlock/metrics.h"
#include "streamlock/options.h"
#include "streamlock/pending_streams.h"
#include "streamlock/postgres.h"
#include "streamlock/reconcile.h"
#include "streamlock/version.h"
