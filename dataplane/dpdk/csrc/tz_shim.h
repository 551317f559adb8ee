/* SPDX-License-Identifier: Apache-2.0
 *
 * trapeze's C shim over DPDK 22.11: out-of-line wrappers (prefix tz_) for the static inline
 * fast-path functions bindgen cannot link to, and the headers bindgen reads. Every wrapper is a
 * one-line forward; the Rust side (src/) states the safety contract of each.
 */
#ifndef TZ_SHIM_H
#define TZ_SHIM_H

#include <rte_config.h>

#include <stdint.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

/* ethdev fast path */
uint16_t tz_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t n);
uint16_t tz_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **pkts, uint16_t n);

/* mbuf allocation */
struct rte_mbuf *tz_pktmbuf_alloc(struct rte_mempool *mp);
int tz_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count);
void tz_pktmbuf_free(struct rte_mbuf *m);
void tz_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned int count);

/* mbuf data and geometry */
void *tz_pktmbuf_mtod(struct rte_mbuf *m);
uint16_t tz_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t tz_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t tz_pktmbuf_nb_segs(const struct rte_mbuf *m);
int tz_pktmbuf_is_contiguous(const struct rte_mbuf *m);
uint16_t tz_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t tz_pktmbuf_tailroom(const struct rte_mbuf *m);
char *tz_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *tz_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
char *tz_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int tz_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);

/* mbuf metadata */
uint64_t tz_mbuf_ol_flags(const struct rte_mbuf *m);
void tz_mbuf_set_ol_flags(struct rte_mbuf *m, uint64_t flags);
void tz_mbuf_set_tx_lens(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len);
uint32_t tz_mbuf_rss_hash(const struct rte_mbuf *m);
uint16_t tz_mbuf_port(const struct rte_mbuf *m);

/* EAL, lcores, time */
int tz_errno(void);
unsigned int tz_lcore_id(void);
uint64_t tz_get_tsc_cycles(void);
uint64_t tz_get_tsc_hz(void);
void tz_prefetch0(const void *p);
int tz_thread_pin_to_cpu(unsigned int cpu);

#endif /* TZ_SHIM_H */
