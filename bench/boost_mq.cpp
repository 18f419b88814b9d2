// SPDX-License-Identifier: MIT
// boost_mq.cpp - a C face for boost::interprocess::message_queue, so that
// transport_boost.c can drive it like every other transport. Built only
// when meson finds a C++ compiler and the Boost headers.
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cerrno>
#include <new>

namespace bip = boost::interprocess;

extern "C" {

int bmq_create(const char *name, size_t max_msgs, size_t max_size)
{
    try {
        bip::message_queue::remove(name);
        bip::message_queue q(bip::create_only, name, max_msgs, max_size);
        return 0;
    } catch (...) {
        return -ENOMEM;
    }
}

void *bmq_open(const char *name)
{
    try {
        return new bip::message_queue(bip::open_only, name);
    } catch (...) {
        return nullptr;
    }
}

int bmq_send(void *q, const void *buf, size_t len)
{
    try {
        static_cast<bip::message_queue *>(q)->send(buf, len, 0);
        return 0;
    } catch (...) {
        return -EIO;
    }
}

// Blocking receive, or (spin) a try_receive only: 1 when nothing was there.
int bmq_recv(void *q, void *buf, size_t cap, size_t *len, int try_only)
{
    try {
        auto *mq = static_cast<bip::message_queue *>(q);
        bip::message_queue::size_type got = 0;
        unsigned prio = 0;
        if (try_only) {
            if (!mq->try_receive(buf, cap, got, prio))
                return 1;
        } else {
            mq->receive(buf, cap, got, prio);
        }
        *len = got;
        return 0;
    } catch (...) {
        return -EIO;
    }
}

void bmq_close(void *q)
{
    delete static_cast<bip::message_queue *>(q);
}

void bmq_remove(const char *name)
{
    bip::message_queue::remove(name);
}
}

#include <boost/version.hpp>
extern "C" const char *bmq_boost_version(void)
{
    return BOOST_LIB_VERSION;
}
