// Self-checks of the reference library (tests/core/reference.h) against hand-computed values and
// against compositions of its own primitives (patchify vs MAE's reshape/einsum, attention vs
// matmul+softmax, label-smoothed cross entropy vs log_softmax). Needs no loom code.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "reference.h"

using namespace ref;

namespace {

#define CHECK(c) EXPECT_TRUE(c) << #c

Ref rnd(Dims s, int seed) {
  std::mt19937 g(static_cast<unsigned>(seed));
  std::uniform_real_distribution<double> u(-1, 1);
  Ref r = zeros(s);
  for (auto& x : r.v) x = u(g);
  return r;
}
bool close(const Ref& a, const Ref& b, double tol = 1e-12) {
  if (a.shape != b.shape) return false;
  for (size_t i = 0; i < a.v.size(); ++i)
    if (std::fabs(a.v[i] - b.v[i]) > tol) return false;
  return true;
}

TEST(Reference, Patchify) {
  // patchify vs MAE reshape/einsum
  { int64_t N=2,C=3,H=4,W=6,p=2,h=2,w=3;
    Ref x = rnd({N,C,H,W}, 1);
    Ref m = reshape(permute(reshape(x, {N,C,h,p,w,p}), {0,2,4,3,5,1}), {N,h*w,p*p*C});
    CHECK(close(patchify(x,p), m));
    CHECK(close(unpatchify(m,p,C,H,W), x)); }
}

TEST(Reference, Matmul) {
  // matmul
  { Ref a{{2,2},{1,2,3,4}}, b{{2,2},{5,6,7,8}}; CHECK(close(matmul(a,b), Ref{{2,2},{19,22,43,50}}));
    Ref v{{2},{1,1}}; CHECK(close(matmul(v,b), Ref{{2},{12,14}})); CHECK(close(matmul(a,v), Ref{{2},{3,7}}));
    CHECK(close(matmul(v,v), Ref{{},{2}}));
    Ref A = rnd({2,1,3,4},2), B = rnd({3,4,2},3); Ref o = matmul(A,B); CHECK((o.shape==Dims{2,3,3,2}));
    // element check
    double acc=0; for (int p=0;p<4;++p) acc += at(A,{1,0,2,p})*at(B,{2,p,1}); CHECK(std::fabs(at(o,{1,2,2,1})-acc)<1e-12);
    CHECK((matmul(rnd({2,3,4},1), Ref{{4},{1,2,3,4}}).shape == Dims{2,3})); }
}

TEST(Reference, CrossEntropyWithSmoothing) {
  // cross entropy with smoothing vs log_softmax form
  { Ref x = rnd({4,5},4); Ref t{{4},{1,-100,4,0}}; double eps=0.1; Ref ls = log_softmax(x,-1);
    double tot=0; int n=0; for (int r=0;r<4;++r){ int tt=int(t.v[r]); if(tt==-100) continue; double s=0; for(int j=0;j<5;++j) s+=at(ls,{r,j}); tot += -(1-eps)*at(ls,{r,tt}) - eps/5*s; ++n;}
    CHECK(std::fabs(cross_entropy(x,t,-100,eps).v[0] - tot/n) < 1e-12); CHECK((cross_entropy(x,t).shape == Dims{})); }
}

TEST(Reference, Sdpa) {
  // sdpa vs composition
  { Ref q=rnd({2,2,3,4},5), k=rnd({2,2,5,4},6), v=rnd({2,2,5,3},7);
    Ref s = mul(matmul(q, transpose(k,-1,-2)), 0.5);
    CHECK(close(sdpa(q,k,v,false,Ref{},Ref{}), matmul(softmax(s,-1), v)));
    Ref bias = rnd({2,1,1,5},8);
    CHECK(close(sdpa(q,k,v,false,Ref{},bias), matmul(softmax(add(s,bias),-1), v)));
    // causal: mask j>i with -inf
    Ref cm = zeros({3,5}); for(int i=0;i<3;++i) for(int j=0;j<5;++j) if(j>i) at(cm,{i,j}) = -1e300;
    CHECK(close(sdpa(q,k,v,true,Ref{},Ref{}), matmul(softmax(add(s,cm),-1), v)));
    Ref mask{{2,5},{0,1,0,0,1, 1,0,0,0,0}}; Ref mb = zeros({2,1,1,5}); for(int b=0;b<2;++b) for(int j=0;j<5;++j) if(mask.v[b*5+j]) at(mb,{b,0,0,j})=-1e300;
    CHECK(close(sdpa(q,k,v,false,mask,Ref{}), matmul(softmax(add(s,mb),-1), v)));
    Ref m2{{2,5},{1,0,0,0,0, 0,0,0,0,0}}; Ref o = sdpa(q,k,v,true,m2,Ref{});
    for (int h=0;h<2;++h) for(int e=0;e<3;++e) CHECK(at(o,{0,h,0,e})==0.0);
    CHECK(at(o,{1,0,0,0}) == at(v,{1,0,0,0})); }
}

TEST(Reference, LayerNorm) {
  // layer norm
  { Ref x = rnd({3,6},9); Ref y = layer_norm(x, Ref{}, Ref{}, 0.0); Ref m = mean(y,{-1}); Ref v2 = mean(mul(y,y),{-1});
    for (double a: m.v) CHECK(std::fabs(a)<1e-12);
    for (double a: v2.v) CHECK(std::fabs(a-1)<1e-10); }
}

TEST(Reference, Reductions) {
  // reductions
  { Ref x{{2,3},{1,2,3,4,5,6}}; CHECK(close(sum(x,{0}), Ref{{3},{5,7,9}})); CHECK(close(sum(x,{1},true), Ref{{2,1},{6,15}}));
    CHECK(close(sum(x), Ref{{},{21}})); CHECK(close(mean(x,{-1}), Ref{{2},{2,5}})); CHECK(close(amax(x,{0}), Ref{{3},{4,5,6}}));
    CHECK(close(argmax(Ref{{2,3},{1,9,3,7,5,6}},1), Ref{{2},{1,0}})); CHECK(close(argmax(Ref{{2,3},{1,9,3,7,5,6}},0,true), Ref{{1,3},{1,0,1}}));
    CHECK(std::fabs(logsumexp(x,{0,1}).v[0] - std::log(std::exp(1)+std::exp(2)+std::exp(3)+std::exp(4)+std::exp(5)+std::exp(6)))<1e-12);
    CHECK((logsumexp(rnd({2,3,4},1),{0,2},true).shape == Dims{1,3,1})); }
}

TEST(Reference, Views) {
  // views
  { Ref x{{2,3},{1,2,3,4,5,6}}; CHECK(close(transpose(x,0,1), Ref{{3,2},{1,4,2,5,3,6}}));
    CHECK(close(narrow(x,1,1,2), Ref{{2,2},{2,3,5,6}})); CHECK(close(slice(Ref{{5},{0,1,2,3,4}},0,1,5,2), Ref{{2},{1,3}}));
    CHECK(close(slice(Ref{{7},{0,1,2,3,4,5,6}},0,0,7,3), Ref{{3},{0,3,6}}));
    CHECK(close(select(x,1,2), Ref{{2},{3,6}})); CHECK(close(expand(Ref{{1,2},{7,8}},{2,-1}), Ref{{2,2},{7,8,7,8}}));
    CHECK(close(broadcast_to(Ref{{2,1},{1,2}},{3,2,2}), Ref{{3,2,2},{1,1,2,2,1,1,2,2,1,1,2,2}}));
    CHECK((flatten(rnd({2,3,4},1),1).shape == Dims{2,12})); CHECK((flatten(rnd({2,3,4},1),0,1).shape == Dims{6,4}));
    CHECK((unsqueeze(x,1).shape == Dims{2,1,3})); CHECK((permute(rnd({2,3,4},1),{2,0,1}).shape == Dims{4,2,3})); }
}

TEST(Reference, Indexing) {
  // indexing
  { Ref x{{2,3},{1,2,3,4,5,6}};
    CHECK(close(gather(x,1,Ref{{2,2},{2,0,1,1}}), Ref{{2,2},{3,1,5,5}}));
    CHECK(close(gather(x,0,Ref{{1,3},{1,0,1}}), Ref{{1,3},{4,2,6}}));
    CHECK(close(index_select(x,1,Ref{{3},{2,2,0}}), Ref{{2,3},{3,3,1,6,6,4}}));
    CHECK(close(scatter_add(x,1,Ref{{2,2},{0,0,2,1}},Ref{{2,2},{10,20,30,40}}), Ref{{2,3},{31,2,3,4,45,36}}));
    CHECK(close(cat({x, Ref{{1,3},{7,8,9}}},0), Ref{{3,3},{1,2,3,4,5,6,7,8,9}}));
    CHECK(close(cat({x, Ref{{2,1},{7,8}}},-1), Ref{{2,4},{1,2,3,7,4,5,6,8}}));
    CHECK(close(stack({Ref{{2},{1,2}}, Ref{{2},{3,4}}},-1), Ref{{2,2},{1,3,2,4}}));
    CHECK(close(stack({Ref{{2},{1,2}}, Ref{{2},{3,4}}},0), Ref{{2,2},{1,2,3,4}}));
    CHECK(close(embedding(Ref{{3,2},{1,2,3,4,5,6}}, Ref{{2},{2,0}}), Ref{{2,2},{5,6,1,2}})); }
}

TEST(Reference, Sorting) {
  // sorting
  { Ref x{{1,6},{2,1,2,-1,1,2}};
    CHECK(close(argsort(x,-1,false), Ref{{1,6},{3,1,4,0,2,5}}));
    CHECK(close(argsort(x,-1,true), Ref{{1,6},{0,2,5,1,4,3}}));
    auto tk = topk(Ref{{4},{0.5,3,-1,2}},2,0,true); CHECK(close(tk.first, Ref{{2},{3,2}})); CHECK(close(tk.second, Ref{{2},{1,3}}));
    auto ts = topk(Ref{{4},{0.5,3,-1,2}},2,0,false); CHECK(close(ts.first, Ref{{2},{-1,0.5}})); }
}

TEST(Reference, SoftmaxL2) {
  // softmax, l2
  { Ref x = rnd({3,4},3); Ref s = softmax(x,0); Ref t = sum(s,{0}); for(double a:t.v) CHECK(std::fabs(a-1)<1e-12);
    Ref n = l2_normalize(x,-1,1e-12); Ref nn = sum(mul(n,n),{-1}); for(double a:nn.v) CHECK(std::fabs(a-1)<1e-12);
    CHECK(close(l2_normalize(x,-1,10.0), mul(x,0.1)));
    CHECK(close(linear(x, Ref{{2,4},{1,0,0,0, 0,1,0,0}}, Ref{{2},{1,1}}), add(narrow(x,1,0,2),1.0)));
    CHECK(std::fabs(gelu_erf(1.0) - 0.8413447460685429) < 1e-12); CHECK(std::fabs(gelu_tanh(1.0) - 0.8411919906082768) < 1e-12);
    CHECK(std::fabs(mse_loss(Ref{{2},{1,2}}, Ref{{2},{0,4}}).v[0] - 2.5) < 1e-12); }
}

}  // namespace
