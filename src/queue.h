/*
** queue.h: defer.queue, the deferred queue.
** SPDX-License-Identifier: MIT
*/
#ifndef DEFER_QUEUE_H
#define DEFER_QUEUE_H

#include "defer.h"

DFR_HIDDEN void dfr_queue_open(lua_State *L, int module, int core);

#endif
