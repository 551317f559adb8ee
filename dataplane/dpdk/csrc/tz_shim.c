/* SPDX-License-Identifier: Apache-2.0
 *
 * See tz_shim.h. Keep every function a plain forward: logic belongs on the Rust side.
 */
/* CPU_SET and rte_cpuset_t (a cpu_set_t) need the GNU extensions of <sched.h>. */
#define _GNU_SOURCE

#include "tz_shim.h"

#include <errno.h>
#include <sched.h>

#include <rte_thread.h>

uint16_t tz_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port_id, queue_id, pkts, n);
}

uint16_t tz_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port_id, queue_id, pkts, n);
}

struct rte_mbuf *tz_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int tz_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void tz_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void tz_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count)
{
	rte_pktmbuf_free_bulk(mbufs, count);
}

void *tz_pktmbuf_mtod(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t tz_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint32_t tz_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

uint16_t tz_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

int tz_pktmbuf_is_contiguous(const struct rte_mbuf *m)
{
	return rte_pktmbuf_is_contiguous(m);
}

uint16_t tz_pktmbuf_headroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_headroom(m);
}

uint16_t tz_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

char *tz_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_prepend(m, len);
}

char *tz_pktmbuf_adj(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_adj(m, len);
}

char *tz_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

int tz_pktmbuf_trim(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_trim(m, len);
}

uint64_t tz_mbuf_ol_flags(const struct rte_mbuf *m)
{
	return m->ol_flags;
}

void tz_mbuf_set_ol_flags(struct rte_mbuf *m, uint64_t flags)
{
	m->ol_flags = flags;
}

void tz_mbuf_set_tx_lens(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len)
{
	m->l2_len = l2_len;
	m->l3_len = l3_len;
	m->l4_len = l4_len;
}

uint32_t tz_mbuf_rss_hash(const struct rte_mbuf *m)
{
	return m->hash.rss;
}

uint16_t tz_mbuf_port(const struct rte_mbuf *m)
{
	return m->port;
}

int tz_errno(void)
{
	return rte_errno;
}

unsigned int tz_lcore_id(void)
{
	return rte_lcore_id();
}

uint64_t tz_get_tsc_cycles(void)
{
	return rte_get_tsc_cycles();
}

uint64_t tz_get_tsc_hz(void)
{
	return rte_get_tsc_hz();
}

void tz_prefetch0(const void *p)
{
	rte_prefetch0(p);
}

int tz_thread_pin_to_cpu(unsigned int cpu)
{
	rte_cpuset_t set;

	if (cpu >= CPU_SETSIZE)
		return -EINVAL;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return rte_thread_set_affinity(&set);
}
