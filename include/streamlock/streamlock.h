#pragma once

/// @file
/// streamlock: reconcile persisted "active stream" markers against Redis stream locks. This header
/// includes all the others; start with streamlock::Client and streamlock::Options.
#include "streamlock/client.h"
#include "streamlock/error.h"
#include "streamlock/log.h"
#include "streamlock/metrics.h"
#include "streamlock/options.h"
#include "streamlock/pending_streams.h"
#include "streamlock/postgres.h"
#include "streamlock/reconcile.h"
#include "streamlock/version.h"
